//! What the kernel offers the program: its version, `bpf(2)`, loading and
//! attaching the program, the memlock limit it may be charged to, bpffs.
//! All but bpffs matter only to policies that load the program.
use std::{
    io,
    net::SocketAddr,
    os::fd::{FromRawFd as _, OwnedFd, RawFd},
};

use nix::{errno::Errno, sys::resource::RLIM_INFINITY};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::report::{Check, Subject};
use crate::{
    preflight::{self, cap},
    steering::{Steering, SteeringError},
};

pub(super) const KERNEL: Subject = Subject::program("kernel");
pub(super) const BPF_SYSCALL: Subject = Subject::program("bpf syscall");
pub(super) const STEERING: Subject = Subject::program("steering");
pub(super) const MEMLOCK: Subject = Subject::program("memlock");
/// Never fails: the agent pins nothing, so bpffs is for the record.
pub(super) const BPFFS: Subject = Subject::agent("bpffs");

pub(super) fn kernel() -> Check {
    let (major, minor) = preflight::MIGRATION_KERNEL;
    match preflight::kernel_release() {
        Ok(release) if preflight::has_migration(&release) => Check::pass(
            KERNEL,
            format!(
                "Linux {release}: connection migration ({major}.{minor}+), lossless crash and drain"
            ),
        ),
        Ok(release) => Check::warn(
            KERNEL,
            format!(
                "Linux {release} predates connection migration ({major}.{minor}): the agent runs \
                 its select-only program, which steers new connections but cannot move a leaving \
                 worker's queue, so a crash or drain resets the connections queued on it (as plain \
                 SO_REUSEPORT does), and there is no queue rescue"
            ),
            format!("upgrade to Linux {major}.{minor} or newer for lossless crash and drain"),
        ),
        Err(e) => Check::warn(
            KERNEL,
            format!("cannot read /proc/sys/kernel/osrelease: {e}"),
            "mount /proc",
        ),
    }
}

/// Why the `bpf(2)` probe failed. Each cause has its own fix, and its
/// message is the check's detail.
#[derive(Debug, thiserror::Error)]
enum BpfProbeError {
    #[error("bpf(2) is denied ({0})")]
    Denied(io::Error),
    #[error("bpf(2) does not exist here (ENOSYS)")]
    Missing,
    #[error("bpf(2) failed: {0}")]
    Failed(io::Error),
}

impl From<Errno> for BpfProbeError {
    fn from(errno: Errno) -> Self {
        // `io::Error` rather than `Errno` for the text: it reads
        // "Operation not permitted (os error 1)", as doctor always printed.
        match errno {
            Errno::EPERM | Errno::EACCES => Self::Denied(errno.into()),
            Errno::ENOSYS => Self::Missing,
            _ => Self::Failed(errno.into()),
        }
    }
}

impl BpfProbeError {
    fn fix(&self) -> &'static str {
        match self {
            Self::Denied(_) => {
                "grant CAP_BPF (see the CAP_BPF line); in a container the seccomp profile may \
                 also block bpf(2): allow it (Docker: --security-opt seccomp=<a profile allowing \
                 bpf>)"
            }
            Self::Missing => {
                "use a kernel built with CONFIG_BPF_SYSCALL=y, or allow bpf(2) in the seccomp \
                 profile; else use --policy kernel"
            }
            Self::Failed(_) => {
                "check the kernel's BPF support (CONFIG_BPF_SYSCALL) and the container's \
                 seccomp profile"
            }
        }
    }
}

/// Creates (and closes) a one-entry array map: the cheapest proof that
/// `bpf(2)` is there and allowed.
pub(super) fn bpf_syscall() -> Check {
    match create_probe_map() {
        Ok(map) => {
            drop(map);
            Check::pass(BPF_SYSCALL, "bpf(2) is available")
        }
        Err(e) => Check::fail(BPF_SYSCALL, e.to_string(), e.fix()),
    }
}

/// `bpf(BPF_MAP_CREATE)` for a 1-entry array of u32. Raw: nix has no
/// `bpf(2)`, and aya's loader would hide the errno the fix depends on.
fn create_probe_map() -> Result<OwnedFd, BpfProbeError> {
    // The leading fields of the kernel's `union bpf_attr` for
    // BPF_MAP_CREATE. Five u32s: no padding, so every byte is initialised.
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    let attr = MapCreate {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        map_flags: 0,
    };
    // SAFETY: bounds: the pointer is to a live local of exactly the size
    // passed, so the kernel reads no byte beyond it (it treats the fields
    // of `bpf_attr` past that size as zero). Aliasing: BPF_MAP_CREATE only
    // reads the attribute, and `attr` is borrowed shared for the call, with
    // no other reference to it. The call touches no other memory of ours.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            &raw const attr,
            size_of::<MapCreate>(),
        )
    };
    let fd = Errno::result(ret)?;
    // The kernel's descriptors are ints; anything else is not one.
    let fd = RawFd::try_from(fd).map_err(|_| Errno::EBADF)?;
    // SAFETY: the kernel just returned this new descriptor, which nothing
    // else in the process knows of: the `OwnedFd` is its only owner, and
    // closes it once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Loads the embedded program and attaches it to a throwaway listener:
/// proves `SK_REUSEPORT` steering end to end, and says which mode runs.
/// Without `needed` (`--policy kernel`) loading is enough to report.
pub(super) fn program(needed: bool) -> Check {
    let steering = match Steering::load() {
        Ok(s) => s,
        Err(e) => {
            let detail = format!(
                "cannot load the SK_REUSEPORT program: {}",
                crate::error_chain(&e)
            );
            return Check::fail(STEERING, detail, load_fix(&e));
        }
    };
    let mode = steering.mode().as_str();
    if !needed {
        return Check::pass(STEERING, format!("the SK_REUSEPORT {mode} program loads"));
    }
    match probe_listener().map(|l| steering.attach(&l)) {
        Ok(Ok(())) => Check::pass(
            STEERING,
            format!("the SK_REUSEPORT {mode} program loads and attaches"),
        ),
        Ok(Err(e)) => Check::fail(
            STEERING,
            format!(
                "the program loads but does not attach: {}",
                crate::error_chain(&e)
            ),
            "check the kernel's SO_ATTACH_REUSEPORT_EBPF support, or use --policy kernel",
        ),
        Err(e) => Check::warn(
            STEERING,
            format!("the program loads; no loopback listener to attach it to: {e}"),
            "bring up the loopback interface",
        ),
    }
}

/// The fix for a program that does not load, by why it did not.
fn load_fix(e: &SteeringError) -> &'static str {
    match e {
        SteeringError::Permission => "grant CAP_BPF (see the CAP_BPF line)",
        SteeringError::Memlock { .. } => "see the memlock line",
        SteeringError::NoObject => "rebuild the agent with its eBPF program: `cargo xtask build`",
        SteeringError::Verify { .. } => {
            "the verifier's last lines above say what it refused: report them with `uname -r`; \
             meanwhile --policy kernel runs without the program"
        }
        _ => "check the kernel's BPF support, or use --policy kernel",
    }
}

fn probe_listener() -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_port(true)?;
    s.bind(&SockAddr::from(SocketAddr::from(([127, 0, 0, 1], 0))))?;
    s.listen(1)?;
    Ok(s)
}

pub(super) fn bpffs() -> Check {
    let mounted = std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
        m.lines().any(|l| {
            l.split_once(" - ")
                .is_some_and(|(_, r)| r.starts_with("bpf "))
        })
    });
    if mounted {
        Check::pass(BPFFS, "mounted (not needed: the agent pins nothing)")
    } else {
        Check::info(BPFFS, "not mounted (fine: the agent pins nothing)")
    }
}

/// A limit as the memlock line shows it.
fn show_limit(v: u64) -> String {
    if v == RLIM_INFINITY {
        "unlimited".to_owned()
    } else {
        format!("{} KiB", v / 1024)
    }
}

/// Kernels before 5.11 charge BPF maps to `RLIMIT_MEMLOCK`: a low limit
/// the agent cannot raise keeps its maps from being created.
pub(super) fn memlock() -> Check {
    let Some((soft, hard)) = preflight::memlock_limits() else {
        return Check::warn(
            MEMLOCK,
            "cannot read RLIMIT_MEMLOCK",
            "none needed on Linux 5.11+",
        );
    };
    let release = preflight::kernel_release().unwrap_or_default();
    if !preflight::bpf_memory_in_memlock(&release) {
        return Check::pass(
            MEMLOCK,
            format!(
                "{} (not used: since Linux 5.11 BPF memory is charged to the cgroup)",
                show_limit(soft)
            ),
        );
    }
    if soft == RLIM_INFINITY || hard == RLIM_INFINITY {
        return Check::pass(
            MEMLOCK,
            format!("{} (the agent raises it)", show_limit(soft)),
        );
    }
    if !preflight::effective_caps().is_ok_and(|c| preflight::has_cap(c, cap::SYS_RESOURCE)) {
        return Check::fail(
            MEMLOCK,
            format!(
                "{} and the hard limit is {}: kernels before 5.11 charge BPF maps to it, and \
                 without CAP_SYS_RESOURCE the agent cannot raise it",
                show_limit(soft),
                show_limit(hard)
            ),
            "grant CAP_SYS_RESOURCE (deploy/overlays/eks-al2), or raise the limit: \
             `ulimit -l unlimited`, LimitMEMLOCK=infinity, or the container runtime's memlock ulimit",
        );
    }
    Check::warn(
        MEMLOCK,
        format!(
            "{} and the hard limit is {}",
            show_limit(soft),
            show_limit(hard)
        ),
        "raise it: `ulimit -l unlimited`, LimitMEMLOCK=infinity in systemd, or run as root",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_map_to_their_causes_and_read_as_before() {
        let denied = BpfProbeError::from(Errno::EPERM);
        assert_eq!(
            denied.to_string(),
            "bpf(2) is denied (Operation not permitted (os error 1))"
        );
        assert!(denied.fix().starts_with("grant CAP_BPF"));
        assert!(matches!(
            BpfProbeError::from(Errno::EACCES),
            BpfProbeError::Denied(_)
        ));
        let missing = BpfProbeError::from(Errno::ENOSYS);
        assert_eq!(missing.to_string(), "bpf(2) does not exist here (ENOSYS)");
        assert!(missing.fix().contains("CONFIG_BPF_SYSCALL=y"));
        assert_eq!(
            BpfProbeError::from(Errno::EINVAL).to_string(),
            "bpf(2) failed: Invalid argument (os error 22)"
        );
    }

    #[test]
    fn limits_show_in_kib_or_unlimited() {
        assert_eq!(show_limit(RLIM_INFINITY), "unlimited");
        assert_eq!(show_limit(64 * 1024), "64 KiB");
    }
}
