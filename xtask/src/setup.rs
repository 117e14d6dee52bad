//! `cargo xtask setup`: make the eBPF toolchain and the runtime prerequisites
//! present. Every step checks first and acts only when something is missing,
//! so a machine that has everything is done in well under two seconds.
//! Whatever it cannot do ends in one line: what is missing and the command
//! that fixes it.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, anyhow, bail};

use crate::util::{self, is_root, output};

#[derive(clap::Args, Default)]
pub struct Options {
    /// Only check; install nothing.
    #[arg(long)]
    pub check: bool,
    /// Also prepare the npm test fixtures and Node 22 (used by `test`).
    #[arg(long)]
    pub fixtures: bool,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    let started = Instant::now();
    ensure_nightly()?;
    ensure_rust_src(opts)?;
    ensure_nightly_rustfmt(opts)?;
    let llvm_major = nightly_llvm_major()?;
    ensure_bpf_linker(opts, llvm_major)?;
    ensure_bpffs(opts)?;
    ensure_tracefs(opts)?;
    raise_memlock();
    ensure_node()?;
    if opts.fixtures {
        prepare_fixtures(opts)?;
    }
    eprintln!(
        "xtask setup: toolchain ready (nightly LLVM {llvm_major}) in {:.2?}",
        started.elapsed()
    );
    Ok(())
}

fn ensure_nightly() -> anyhow::Result<()> {
    if output(Command::new("rustc").args(["+nightly", "-V"])).is_some() {
        return Ok(());
    }
    bail!(
        "missing: the nightly Rust toolchain (builds the eBPF program); fix: `rustup toolchain install nightly`"
    )
}

fn ensure_rust_src(opts: &Options) -> anyhow::Result<()> {
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .ok_or_else(|| anyhow!("`rustc +nightly --print sysroot` failed"))?;
    let core = Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library/core");
    if core.exists() {
        return Ok(());
    }
    add_nightly_component(opts, "rust-src", "needed by -Z build-std")
}

/// The lint step formats with nightly rustfmt: `group_imports` and
/// `imports_granularity` in rustfmt.toml are unstable options.
fn ensure_nightly_rustfmt(opts: &Options) -> anyhow::Result<()> {
    if output(Command::new("rustfmt").args(["+nightly", "--version"])).is_some() {
        return Ok(());
    }
    add_nightly_component(opts, "rustfmt", "the lint step's import grouping")
}

fn add_nightly_component(opts: &Options, component: &str, why: &str) -> anyhow::Result<()> {
    let fix = format!("rustup component add {component} --toolchain nightly");
    if opts.check {
        bail!("missing: {component} for nightly ({why}); fix: `{fix}`");
    }
    eprintln!("xtask setup: {fix}");
    util::run(Command::new("rustup").args([
        "component",
        "add",
        component,
        "--toolchain",
        "nightly",
    ]))
    .with_context(|| format!("installing {component} failed; fix: `{fix}`"))
}

/// LLVM major version of the nightly compiler: bpf-linker must be built
/// against an LLVM at least this new to read the bitcode it emits.
fn nightly_llvm_major() -> anyhow::Result<u32> {
    let vv = output(Command::new("rustc").args(["+nightly", "-vV"]))
        .ok_or_else(|| anyhow!("`rustc +nightly -vV` failed"))?;
    parse_llvm_major(&vv).ok_or_else(|| anyhow!("no `LLVM version:` line in `rustc +nightly -vV`"))
}

pub fn parse_llvm_major(rustc_vv: &str) -> Option<u32> {
    rustc_vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))
        .and_then(|v| v.trim().split('.').next()?.parse().ok())
}

/// The LLVM major bpf-linker links against: it links libLLVM dynamically,
/// so `ldd` names the library (`libLLVM.so.22.1`).
fn bpf_linker_llvm_major(linker: &Path) -> Option<u32> {
    let ldd = output(Command::new("ldd").arg(linker))?;
    ldd.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("libLLVM")?;
        let rest = rest.trim_start_matches(['-', '.', 's', 'o']);
        rest.split(['.', ' ']).next()?.parse().ok()
    })
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    } else if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn ensure_bpf_linker(opts: &Options, llvm_major: u32) -> anyhow::Result<()> {
    let install = format!(
        "LLVM_PREFIX=/usr/lib/llvm-{llvm_major} cargo install bpf-linker --no-default-features --features llvm-{llvm_major}"
    );
    if let Some(linker) = find_in_path("bpf-linker") {
        match bpf_linker_llvm_major(&linker) {
            Some(found) if found >= llvm_major => return Ok(()),
            Some(found) => eprintln!(
                "xtask setup: bpf-linker uses LLVM {found}, older than nightly's LLVM {llvm_major}; rebuilding"
            ),
            None => eprintln!("xtask setup: cannot tell bpf-linker's LLVM version; rebuilding"),
        }
    }
    if opts.check {
        bail!("missing: bpf-linker for LLVM {llvm_major}; fix: `{install}`");
    }
    let prefix = PathBuf::from(format!("/usr/lib/llvm-{llvm_major}"));
    if !prefix.join("bin/llvm-config").exists() {
        install_llvm_dev(llvm_major)?;
    }
    eprintln!("xtask setup: {install}");
    util::run(
        Command::new("cargo")
            .env("LLVM_PREFIX", &prefix)
            .args([
                "install",
                "--locked",
                "bpf-linker",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{llvm_major}")),
    )
    .with_context(|| format!("building bpf-linker failed; fix: `{install}`"))
}

fn install_llvm_dev(llvm_major: u32) -> anyhow::Result<()> {
    let packages = [
        format!("llvm-{llvm_major}-dev"),
        format!("libpolly-{llvm_major}-dev"),
    ];
    let fix = format!("apt-get install -y {}", packages.join(" "));
    if !is_root() || find_in_path("apt-get").is_none() {
        bail!("missing: LLVM {llvm_major} development files for bpf-linker; fix: `sudo {fix}`");
    }
    eprintln!("xtask setup: {fix}");
    let apt = |args: &[&str]| {
        util::run(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(args),
        )
    };
    // The package lists of a fresh machine may predate the LLVM packages.
    apt(&["update", "-q"]).context("apt-get update failed")?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(packages.iter().map(String::as_str));
    apt(&args).with_context(|| format!("installing LLVM {llvm_major} failed; fix: `{fix}`"))
}

/// bpffs: the agent pins nothing, so it is optional (advice, not a failure).
fn ensure_bpffs(opts: &Options) -> anyhow::Result<()> {
    ensure_mounted(opts, "bpf", "/sys/fs/bpf", "optional for watt-agent")
}

/// tracefs, for kernels whose only hook of the workers' epoll waits is the
/// `syscalls` tracepoints (this dev box's: it refuses fentry). The agent
/// falls back to `/proc` without it, and where no hook loads the
/// `event_loop` test says so: a note, not a failure.
fn ensure_tracefs(opts: &Options) -> anyhow::Result<()> {
    ensure_mounted(
        opts,
        "tracefs",
        "/sys/kernel/tracing",
        "the event-loop signal may need it",
    )
}

/// Mounts a filesystem of type `fstype` at `path` unless one is mounted
/// (as root, without `--check`); otherwise, or if that fails, a note with
/// the fix.
fn ensure_mounted(opts: &Options, fstype: &str, path: &str, why: &str) -> anyhow::Result<()> {
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some(fstype))
    {
        return Ok(());
    }
    let fix = format!("mount -t {fstype} {fstype} {path}");
    let note = |what: String| eprintln!("xtask setup: note: {what} ({why}); fix: `sudo {fix}`");
    if opts.check || !is_root() {
        note(format!("{fstype} is not mounted"));
    } else if let Err(e) = util::run(Command::new("mount").args(["-t", fstype, fstype, path])) {
        note(format!("mounting {fstype} failed: {e:#}"));
    }
    Ok(())
}

/// Raise `RLIMIT_MEMLOCK` for this process and the test and run processes it
/// starts (kernels before 5.11 charge BPF maps against it).
fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid pointer to a local; failure (not root) is harmless.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const unlimited) };
}

fn ensure_node() -> anyhow::Result<()> {
    let version = output(Command::new("node").arg("--version")).ok_or_else(|| {
        anyhow!("missing: Node.js 18 or newer (runs the workers); fix: `apt-get install -y nodejs` or install Node from nodejs.org")
    })?;
    let major: u32 = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 18 {
        bail!(
            "missing: Node.js 18 or newer (found {}); fix: install a current Node.js",
            version.trim()
        );
    }
    Ok(())
}

fn prepare_fixtures(opts: &Options) -> anyhow::Result<()> {
    let script = util::root().join("tests/fixtures/prepare.sh");
    if !script.exists() {
        return Ok(());
    }
    if opts.check {
        return Ok(());
    }
    util::run(Command::new("bash").arg(&script)).with_context(|| {
        format!(
            "preparing the npm test fixtures failed; fix: `bash {}`",
            script.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_parses() {
        let vv = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nLLVM version: 22.1.4\n";
        assert_eq!(parse_llvm_major(vv), Some(22));
        assert_eq!(parse_llvm_major("rustc 1.0"), None);
    }
}
