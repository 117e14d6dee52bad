//! One guest: its initramfs, its two virtiofs daemons and qemu, and the
//! guarantee that none of them outlives the run (`Processes` kills what is
//! left, by pid, on every way out).
use std::{
    collections::HashMap,
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::packages::Kernel;
use crate::util;

/// Modules the guest needs before it can mount the host's root (bookworm's
/// cloud kernels build virtio-pci, fuse, virtiofs and overlayfs as modules,
/// trixie's build the first three in; none has 9p at all).
const BOOT_MODULES: &[&str] = &["virtio_pci", "virtiofs", "overlay"];

/// Writes `<work>/initrd.gz`: busybox, the init script and the boot
/// modules of `kernel` (decompressed: busybox's insmod reads plain ELF),
/// with their load order.
pub fn initramfs(kernel: &Kernel, work: &Path, init: &Path) -> anyhow::Result<PathBuf> {
    let tree = work.join("initramfs");
    let _ = fs::remove_dir_all(&tree);
    for d in ["bin", "proc", "sys", "dev", "modules", "newroot"] {
        fs::create_dir_all(tree.join(d))?;
    }
    let busybox = Path::new("/bin/busybox");
    fs::copy(busybox, tree.join("bin/busybox"))
        .context("copying /bin/busybox (package busybox-static)")?;
    install_executable(init, &tree.join("init"))?;
    let order = load_order(&kernel.modules())?;
    let mut listing = String::new();
    for module in &order {
        let name = decompress(&kernel.modules().join(module), &tree.join("modules"))?;
        listing.push_str(&name);
        listing.push('\n');
    }
    fs::write(tree.join("modules/order"), listing)?;
    pack(&tree, &work.join("initrd.gz"))
}

/// Copies a script into an initramfs tree, executable whatever mode the
/// checkout gave it (the kernel runs /init only if it is).
pub(super) fn install_executable(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The qemu command line both architectures share: no default devices, the
/// kernel and initramfs, the console into `results/console.log`, qemu's
/// own messages into `results/qemu.log`, and no reboot (a guest that
/// panics or powers off ends the run).
pub(super) fn qemu(
    binary: &str,
    kernel: &Kernel,
    initrd: &Path,
    append: &str,
    results: &Path,
) -> anyhow::Result<Command> {
    let mut qemu = Command::new(binary);
    qemu.args(["-nodefaults", "-no-user-config"])
        .arg("-kernel")
        .arg(kernel.vmlinuz())
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", append])
        .arg("-serial")
        .arg(format!("file:{}", results.join("console.log").display()))
        .args(["-display", "none", "-no-reboot"])
        .stdin(Stdio::null())
        .stderr(fs::File::create(results.join("qemu.log"))?);
    Ok(qemu)
}

/// Packs the folder `tree` into the gzip'd cpio archive `out`.
pub(super) fn pack(tree: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    let script = format!(
        "cd {} && find . | cpio -o -H newc --quiet | gzip -1 > {}",
        shell_quote(tree),
        shell_quote(out)
    );
    util::run(Command::new("sh").arg("-c").arg(script)).context("packing the initramfs")?;
    Ok(out.to_path_buf())
}

/// The boot modules and their dependencies from `modules.dep`, each after
/// what it depends on; those built into the kernel (`modules.builtin`) are
/// left out.
fn load_order(modules: &Path) -> anyhow::Result<Vec<String>> {
    let read = |name: &str| {
        fs::read_to_string(modules.join(name))
            .with_context(|| format!("reading {}/{name}", modules.display()))
    };
    let text = read("modules.dep")?;
    let builtin = read("modules.builtin")?;
    order_of(&text, &builtin).with_context(|| format!("in {}", modules.display()))
}

fn order_of(text: &str, builtin: &str) -> anyhow::Result<Vec<String>> {
    let deps: HashMap<&str, Vec<&str>> = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| (m, d.split_whitespace().collect()))
        .collect();
    let mut order = Vec::new();
    for want in BOOT_MODULES {
        if builtin.lines().any(|k| module_name(k) == *want) {
            continue;
        }
        let module = deps
            .keys()
            .find(|k| module_name(k) == *want)
            .with_context(|| format!("kernel module {want} is neither a module nor built in"))?;
        visit(module, &deps, &mut order);
    }
    Ok(order)
}

fn visit(module: &str, deps: &HashMap<&str, Vec<&str>>, order: &mut Vec<String>) {
    if order.iter().any(|m| m == module) {
        return;
    }
    // modules.dep lists the whole closure, deepest last.
    for dep in deps.get(module).into_iter().flatten().rev() {
        visit(dep, deps, order);
    }
    order.push(module.to_owned());
}

/// `kernel/fs/fuse/virtiofs.ko.xz` -> `virtiofs`.
fn module_name(path: &str) -> &str {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file)
}

/// Copies one module into `dir`, decompressed; returns its file name.
fn decompress(src: &Path, dir: &Path) -> anyhow::Result<String> {
    let file = src.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let (name, tool) = if let Some(n) = file.strip_suffix(".xz") {
        (n, Some("xz"))
    } else if let Some(n) = file.strip_suffix(".zst") {
        (n, Some("zstd"))
    } else {
        (file, None)
    };
    let dst = dir.join(name);
    match tool {
        None => {
            fs::copy(src, &dst)?;
        }
        Some(tool) => {
            let out = Command::new(tool)
                .args(["-d", "-c", "-q"])
                .arg(src)
                .output()
                .with_context(|| format!("running {tool} (install xz-utils / zstd)"))?;
            if !out.status.success() {
                bail!("{tool} -d {} failed", src.display());
            }
            fs::File::create(&dst)?.write_all(&out.stdout)?;
        }
    }
    Ok(name.to_owned())
}

/// How qemu runs the guest.
#[derive(Clone, Copy, Debug)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn pick(asked: &str) -> anyhow::Result<Self> {
        let hardware_kvm = ["/sys/module/kvm_intel", "/sys/module/kvm_amd"]
            .iter()
            .any(|m| Path::new(m).exists());
        match asked {
            "auto" if hardware_kvm => Ok(Self::Kvm),
            "auto" | "tcg" => Ok(Self::Tcg),
            "kvm" if Path::new("/dev/kvm").exists() => Ok(Self::Kvm),
            "kvm" => bail!("--accel kvm: this host has no /dev/kvm; fix: --accel tcg"),
            other => bail!("--accel: `{other}` is not auto, kvm or tcg"),
        }
    }

    /// qemu's `-accel` and `-cpu` values.
    pub fn qemu_args(self) -> [&'static str; 4] {
        match self {
            Self::Kvm => ["-accel", "kvm", "-cpu", "host"],
            Self::Tcg => ["-accel", "tcg,thread=multi", "-cpu", "max"],
        }
    }
}

/// How to start one guest.
pub struct Boot<'a> {
    pub kernel: &'a Kernel,
    pub initrd: &'a Path,
    pub results: &'a Path,
    pub script: &'a Path,
    pub accel: Accel,
    pub timeout: Duration,
}

/// Children of one guest, killed on drop.
pub(super) struct Processes(pub(super) Vec<(&'static str, Child)>);

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// Boots a guest that panics before its init script ran this many times in
/// all, at most.
const BOOT_ATTEMPTS: u32 = 3;

/// Boots the guest as `boot` does, booting again (up to `BOOT_ATTEMPTS`)
/// when the kernel panicked before the init script's first line. Under TCG
/// with several vCPUs, the newest kernels now and then die of a stray
/// `int3` while patching their own text at boot (seen with trixie's 7.3 in
/// CI, in `sched_clock_cpu`), before anything of ours has run; that is the
/// emulator, not the kernel or the agent. A panic after init started is a
/// result and is never retried. Each panicked boot's console is kept as
/// `console-panicked-N.log`. Returns whether the last boot powered off by
/// itself, and how many boots panicked early.
pub fn boot_retrying_early_panics(b: &Boot<'_>) -> anyhow::Result<(bool, u32)> {
    let mut panicked = 0;
    loop {
        let powered_off = boot(b)?;
        let console = b.results.join("console.log");
        let text = fs::read_to_string(&console).unwrap_or_default();
        if !died_before_init(&text) || panicked + 1 >= BOOT_ATTEMPTS {
            return Ok((powered_off, panicked));
        }
        panicked += 1;
        let kept = b.results.join(format!("console-panicked-{panicked}.log"));
        fs::rename(&console, &kept)?;
        eprintln!(
            "xtask kernels: {} panicked while booting, before init ran (boot {panicked} of at most {BOOT_ATTEMPTS}); booting again, console kept in {}",
            b.kernel.release,
            kept.display()
        );
    }
}

/// Whether a console shows a kernel that panicked before the init script
/// printed its first line.
fn died_before_init(console: &str) -> bool {
    !console.contains("watt-init: started") && console.contains("Kernel panic")
}

/// Boots the guest and waits until it powers off or `timeout` passes.
/// Returns whether it powered off by itself.
pub fn boot(b: &Boot<'_>) -> anyhow::Result<bool> {
    let sock = |name: &str| b.results.join(format!("{name}.sock"));
    let mut procs = Processes(Vec::new());
    procs.0.push((
        "virtiofsd (root)",
        virtiofsd(Path::new("/"), &sock("root"), true, b.results)?,
    ));
    procs.0.push((
        "virtiofsd (results)",
        virtiofsd(b.results, &sock("results"), false, b.results)?,
    ));
    wait_for_sockets(&[sock("root"), sock("results")])?;
    let append = format!(
        "console=ttyS0 panic=-1 quiet watt.script={} watt.modules={}",
        b.script.display(),
        b.kernel.modules().display()
    );
    let mut qemu = qemu("qemu-system-x86_64", b.kernel, b.initrd, &append, b.results)?;
    qemu.args(["-machine", "q35"])
        .args(b.accel.qemu_args())
        .args(["-smp", "2", "-m", "3072"])
        .args(["-object", "memory-backend-memfd,id=mem,size=3072M,share=on"])
        .args(["-numa", "node,memdev=mem"])
        .arg("-chardev")
        .arg(format!("socket,id=root,path={}", sock("root").display()))
        .args(["-device", "vhost-user-fs-pci,chardev=root,tag=hostroot"])
        .arg("-chardev")
        .arg(format!(
            "socket,id=results,path={}",
            sock("results").display()
        ))
        .args(["-device", "vhost-user-fs-pci,chardev=results,tag=results"]);
    let qemu = qemu
        .spawn()
        .context("starting qemu-system-x86_64 (package qemu-system-x86)")?;
    procs.0.push(("qemu", qemu));
    wait_for_power_off(&mut procs, &b.kernel.release, b.timeout)
}

/// Waits until the last of `procs` (qemu) exits or `timeout` passes; the
/// rest are killed when `procs` drops. Returns whether the guest powered
/// off by itself.
pub(super) fn wait_for_power_off(
    procs: &mut Processes,
    release: &str,
    timeout: Duration,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, q) = procs.0.last_mut().expect("qemu");
        if let Some(status) = q.try_wait()? {
            return Ok(status.success());
        }
        if Instant::now() >= deadline {
            eprintln!("xtask kernels: {release} did not finish within {timeout:?}: killing it");
            return Ok(false);
        }
        thread::sleep(Duration::from_millis(200));
    }
}

fn virtiofsd(dir: &Path, socket: &Path, readonly: bool, logs: &Path) -> anyhow::Result<Child> {
    let _ = fs::remove_file(socket);
    let log = logs.join(format!(
        "virtiofsd-{}.log",
        socket.file_stem().and_then(|s| s.to_str()).unwrap_or("x")
    ));
    let mut cmd = Command::new(virtiofsd_binary());
    cmd.arg(format!("--shared-dir={}", dir.display()))
        .arg(format!("--socket-path={}", socket.display()))
        .args(["--sandbox=none", "--announce-submounts"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(log)?);
    if readonly {
        cmd.arg("--readonly");
    }
    cmd.spawn().context(
        "starting virtiofsd (`cargo install virtiofsd`; `cargo xtask kernels` installs it)",
    )
}

/// Where `cargo install` puts virtiofsd.
pub fn virtiofsd_binary() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    home.join("bin/virtiofsd")
}

fn wait_for_sockets(sockets: &[PathBuf]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sockets.iter().all(|s| s.exists()) {
        if Instant::now() >= deadline {
            bail!("virtiofsd did not create {sockets:?} within 10 s");
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

pub(super) fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::{module_name, order_of, visit};

    #[test]
    fn only_a_panic_before_init_is_an_early_panic() {
        use super::died_before_init;
        let boot_panic = "[ 2.4] Oops: int3\n[ 2.4] Kernel panic - not syncing: Fatal exception\n";
        assert!(died_before_init(boot_panic));
        let later = "watt-init: started\n==> watt-step test-steering\nKernel panic - not syncing\n";
        assert!(
            !died_before_init(later),
            "a panic under our steps is a result"
        );
        assert!(!died_before_init("[ 9.0] reboot: Power down\n"));
    }

    #[test]
    fn built_in_boot_modules_are_not_loaded() {
        // trixie's cloud kernel: virtio-pci and virtiofs built in, overlay a module.
        let dep = "kernel/fs/overlayfs/overlay.ko.xz:\nkernel/fs/fuse/virtiofs.ko.xz:\n";
        let builtin = "kernel/drivers/virtio/virtio_pci.ko\nkernel/fs/fuse/virtiofs.ko\n";
        let order = order_of(dep, builtin).unwrap();
        assert_eq!(order, ["kernel/fs/overlayfs/overlay.ko.xz"]);
        assert!(
            order_of(dep, "").is_err(),
            "virtio_pci is missing altogether"
        );
    }

    #[test]
    fn modules_load_after_their_dependencies() {
        let deps: HashMap<&str, Vec<&str>> = [
            (
                "fs/virtiofs.ko.xz",
                vec!["virtio/virtio.ko.xz", "virtio/ring.ko.xz", "fs/fuse.ko.xz"],
            ),
            ("virtio/virtio.ko.xz", vec!["virtio/ring.ko.xz"]),
            ("virtio/ring.ko.xz", vec![]),
            ("fs/fuse.ko.xz", vec![]),
        ]
        .into_iter()
        .collect();
        let mut order = Vec::new();
        visit("fs/virtiofs.ko.xz", &deps, &mut order);
        assert_eq!(
            order,
            [
                "fs/fuse.ko.xz",
                "virtio/ring.ko.xz",
                "virtio/virtio.ko.xz",
                "fs/virtiofs.ko.xz"
            ]
        );
        assert_eq!(module_name("kernel/fs/fuse/virtiofs.ko.xz"), "virtiofs");
    }
}
