//! `cargo xtask kernels`: the kernel matrix. Boots each kernel of a list
//! (Debian's cloud kernels, by package name) under qemu with the host's root
//! filesystem shared read-only over virtiofs, and inside each runs the
//! kernel tests (`steering`, `migration`), `watt-agent doctor`, and the
//! namespace e2e test (`deploy/e2e-netns.sh`: the `DaemonSet`'s exact
//! capability set, with requests from outside through a veth pair). One line
//! per kernel, then a table; exit 1 if any kernel failed any step.
//!
//! No disk image is built: the initramfs holds only busybox, the init
//! script and the modules that reach virtiofs; everything else (bash, node,
//! the test binaries) is the host's own, read-only. The guest writes its
//! results into a second, writable share.
use std::{fs, path::Path, process::Command, time::Duration};

use anyhow::{Context as _, bail};

use crate::util;

mod arm64;
mod build;
mod guest;
mod packages;
mod report;

/// The default list: the lines EKS nodes run (Amazon Linux 2023: 6.1, 6.12;
/// Amazon Linux 2: 5.10, which has no migration) and the newest Debian has.
/// The host's own kernel (6.18 here) is covered by the host's tests.
const DEFAULT_KERNELS: &str = "5.10,6.1,6.12,newest";

#[derive(clap::Args)]
pub struct Options {
    /// Kernel lines to boot, e.g. `6.1,6.12`; `newest` is the newest cloud
    /// kernel in Debian's suites; `none` for no `x86_64` guest.
    #[arg(long, default_value = DEFAULT_KERNELS, value_delimiter = ',')]
    pub kernels: Vec<String>,
    /// arm64 (Graviton) kernel lines, booted under qemu-system-aarch64 with
    /// the cross-built kernel tests; `none` for no arm64 guest.
    #[arg(long, default_value = "6.1", value_delimiter = ',')]
    pub arm64: Vec<String>,
    /// qemu accelerator: `auto`, `kvm` or `tcg`. `auto` takes KVM only where
    /// the host has hardware KVM (the `kvm_intel` or `kvm_amd` module): a
    /// paravirtualised /dev/kvm (PVM, as on this workplace's machines) boots
    /// no stock kernel, so `auto` picks TCG there.
    #[arg(long, default_value = "auto")]
    pub accel: String,
    /// Steps to run in each guest.
    #[arg(long, default_value = "tests,doctor,e2e", value_delimiter = ',')]
    pub steps: Vec<String>,
    /// Seconds one guest may take from boot to power-off.
    #[arg(long, default_value_t = 1200)]
    pub timeout: u64,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    if !util::is_root() {
        bail!(
            "`cargo xtask kernels` runs qemu and virtiofsd as root: run it as root or with sudo -E"
        );
    }
    let accel = guest::Accel::pick(&opts.accel)?;
    let lines = |list: &[String]| -> Vec<String> {
        list.iter().filter(|l| *l != "none").cloned().collect()
    };
    let arm64_lines = lines(&opts.arm64);
    ensure_tools(!arm64_lines.is_empty())?;
    let root = util::root();
    let tests = build::build(&root, None)?;
    // The guest overlays a writable tmpfs on the e2e's cache folder; an
    // overlay needs its mount point to exist in the read-only lower root.
    fs::create_dir_all(root.join("target/deploy-check"))?;
    let kernels_dir = root.join("target/kernels");
    let mut apt = packages::Apt::new(&kernels_dir, packages::Arch::Amd64)?;
    let mut rows = Vec::new();
    for line in &lines(&opts.kernels) {
        let package = apt.resolve(line)?;
        let kernel = apt.fetch(&package, &kernels_dir)?;
        let results = kernels_dir.join("results").join(&kernel.release);
        let _ = fs::remove_dir_all(&results);
        fs::create_dir_all(&results)?;
        let initrd = guest::initramfs(&kernel, &results, &root.join("xtask/kernels/init.sh"))?;
        write_env(&results, &root, &tests, &opts.steps)?;
        eprintln!("xtask kernels: booting {} ({accel:?})", kernel.release);
        let started = std::time::Instant::now();
        let boot = guest::Boot {
            kernel: &kernel,
            initrd: &initrd,
            results: &results,
            script: &root.join("xtask/kernels/guest.sh"),
            accel,
            timeout: Duration::from_secs(opts.timeout),
        };
        let (powered_off, panicked_boots) = guest::boot_retrying_early_panics(&boot)?;
        let mut row = report::Row::read(
            line,
            &kernel.release,
            &results,
            &opts.steps,
            powered_off,
            started.elapsed(),
        );
        row.panicked_boots = panicked_boots;
        eprintln!("xtask kernels: {}", row.line());
        if !row.ok() {
            report::print_failure(&results);
        }
        rows.push(row);
    }
    for line in &arm64_lines {
        let row = arm64::run(&root, &kernels_dir, line, Duration::from_secs(opts.timeout))?;
        eprintln!("xtask kernels: {}", row.line());
        if !row.ok() {
            report::print_failure(&kernels_dir.join("results").join(&row.release));
        }
        rows.push(row);
    }
    report::table(&rows);
    let failed = rows.iter().filter(|r| !r.ok()).count();
    if failed > 0 {
        bail!(
            "{failed} of {} kernels failed (results under {})",
            rows.len(),
            kernels_dir.join("results").display()
        );
    }
    Ok(())
}

/// qemu, busybox, the initramfs tools (Debian packages) and virtiofsd
/// (crates.io: Debian has it only from trixie, built for a newer glibc).
fn ensure_tools(arm64: bool) -> anyhow::Result<()> {
    let mut wanted = vec![
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("busybox", "busybox-static"),
        ("cpio", "cpio"),
        ("xz", "xz-utils"),
        ("zstd", "zstd"),
        ("depmod", "kmod"),
        ("dpkg-deb", "dpkg"),
        ("setpriv", "util-linux"),
        // What the guest's e2e step calls from the host's root.
        ("ip", "iproute2"),
        ("curl", "curl"),
    ];
    if arm64 {
        wanted.extend(arm64::TOOLS);
    }
    let mut missing: Vec<&str> = wanted
        .iter()
        .filter(|(tool, _)| {
            util::output(Command::new("sh").args(["-c", &format!("command -v {tool}")])).is_none()
        })
        .map(|(_, package)| *package)
        .collect();
    // The e2e reads the manifests with PyYAML (or deploy/check.sh's venv,
    // which a standalone `cargo xtask kernels` may not have made).
    let yaml = Command::new("python3").args(["-c", "import yaml"]).output();
    if !yaml.is_ok_and(|o| o.status.success()) {
        missing.push("python3-yaml");
    }
    if !missing.is_empty() {
        eprintln!("xtask kernels: apt-get install {}", missing.join(" "));
        util::run(Command::new("apt-get").args(["update", "-q"]))?;
        util::run(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing),
        )
        .with_context(|| format!("installing {} failed", missing.join(" ")))?;
    }
    if !Path::new("/bin/busybox").exists() {
        bail!("missing: /bin/busybox (the static busybox); fix: `apt-get install busybox-static`");
    }
    if !guest::virtiofsd_binary().exists() {
        let libs = ["libcap-ng-dev", "libseccomp-dev"];
        eprintln!(
            "xtask kernels: cargo install virtiofsd (needs {})",
            libs.join(", ")
        );
        util::run(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(libs),
        )?;
        util::run(Command::new(env!("CARGO")).args(["install", "--locked", "virtiofsd"]))
            .context("`cargo install virtiofsd` failed")?;
    }
    Ok(())
}

/// What the guest script reads first (`/mnt/env`).
fn write_env(
    results: &Path,
    root: &Path,
    tests: &[String],
    steps: &[String],
) -> anyhow::Result<()> {
    let env = format!(
        "WATT_ROOT='{}'\nWATT_TESTS='{}'\nWATT_STEPS='{}'\n",
        root.display(),
        tests.join(" "),
        steps.join(" ")
    );
    fs::write(results.join("env"), env)?;
    Ok(())
}
