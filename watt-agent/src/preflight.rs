//! What the kernel and the process must offer before the program can load:
//! kernel version, capabilities, memlock. Used by `Steering::load` (to turn a
//! bare EPERM into an explanation) and by `watt-agent doctor`.
use std::{fs, io};

use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};

/// First kernel with `BPF_SK_REUSEPORT_SELECT_OR_MIGRATE` (`migrating_sk`):
/// older ones get the select-only program (`steering::ProgramMode`).
pub const MIGRATION_KERNEL: (u32, u32) = (5, 14);

/// Linux capability numbers the agent cares about.
pub mod cap {
    pub const NET_BIND_SERVICE: u32 = 10;
    pub const NET_ADMIN: u32 = 12;
    pub const SYS_PTRACE: u32 = 19;
    pub const SYS_ADMIN: u32 = 21;
    pub const SYS_RESOURCE: u32 = 24;
    pub const KILL: u32 = 5;
    pub const SETUID: u32 = 7;
    pub const SETGID: u32 = 6;
    pub const BPF: u32 = 39;
    pub const PERFMON: u32 = 38;
}

/// Parses the `major.minor` prefix of a kernel release such as
/// `6.18.44-fc-v657` or `5.4.0-1103-aws`.
#[must_use]
pub fn parse_kernel_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The running kernel's release string (`uname -r`).
pub fn kernel_release() -> io::Result<String> {
    Ok(fs::read_to_string("/proc/sys/kernel/osrelease")?
        .trim()
        .to_owned())
}

/// Whether `release` is new enough for connection migration. A release
/// that does not parse counts as new: the kernel's verifier then has the
/// last word, and its refusal is reported as such.
#[must_use]
pub fn has_migration(release: &str) -> bool {
    parse_kernel_release(release).is_none_or(|v| v >= MIGRATION_KERNEL)
}

/// First kernel that charges BPF memory to the cgroup instead of
/// `RLIMIT_MEMLOCK`.
pub const MEMCG_KERNEL: (u32, u32) = (5, 11);

/// Whether `release` charges BPF maps to `RLIMIT_MEMLOCK` (before 5.11), so
/// a low limit that cannot be raised keeps the maps from being created.
#[must_use]
pub fn bpf_memory_in_memlock(release: &str) -> bool {
    parse_kernel_release(release).is_some_and(|v| v < MEMCG_KERNEL)
}

/// `RLIMIT_MEMLOCK` as (soft, hard) in bytes, `RLIM_INFINITY` for
/// unlimited; `None` if it cannot be read.
#[must_use]
pub fn memlock_limits() -> Option<(u64, u64)> {
    getrlimit(Resource::RLIMIT_MEMLOCK).ok()
}

/// Parses the effective capability mask from the text of `/proc/<pid>/status`.
#[must_use]
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// This process's effective capabilities.
pub fn effective_caps() -> io::Result<u64> {
    let status = fs::read_to_string("/proc/self/status")?;
    parse_cap_eff(&status).ok_or_else(|| io::Error::other("no CapEff line in /proc/self/status"))
}

/// Whether `caps` holds capability number `cap`.
#[must_use]
pub fn has_cap(caps: u64, cap: u32) -> bool {
    caps & (1u64 << cap) != 0
}

/// Loading and attaching an `SK_REUSEPORT` program needs `CAP_BPF` (or
/// `CAP_SYS_ADMIN`, which implies it on every kernel).
#[must_use]
pub fn can_load_bpf(caps: u64) -> bool {
    has_cap(caps, cap::BPF) || has_cap(caps, cap::SYS_ADMIN)
}

/// Loading the event-loop programs (`fentry`/`fexit`, tracing programs)
/// needs `CAP_PERFMON` beside `CAP_BPF` (or `CAP_SYS_ADMIN`).
#[must_use]
pub fn can_trace(caps: u64) -> bool {
    has_cap(caps, cap::SYS_ADMIN) || (has_cap(caps, cap::BPF) && has_cap(caps, cap::PERFMON))
}

/// Raises `RLIMIT_MEMLOCK` to infinity where allowed. Kernels since 5.11
/// charge BPF memory to the cgroup instead, so failure is not fatal.
#[must_use]
pub fn raise_memlock() -> bool {
    setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_parse() {
        assert_eq!(parse_kernel_release("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(parse_kernel_release("5.4.0-1103-aws"), Some((5, 4)));
        assert_eq!(parse_kernel_release("5.14"), Some((5, 14)));
        assert_eq!(parse_kernel_release("garbage"), None);
    }

    #[test]
    fn migration_starts_at_5_14() {
        assert!(has_migration("6.1.0-57-cloud-amd64"));
        assert!(has_migration("5.14.0"));
        assert!(!has_migration("5.13.19"));
        assert!(!has_migration("5.10.215-203.850.amzn2.x86_64"));
        assert!(has_migration("x"));
    }

    #[test]
    fn bpf_memory_moves_to_the_cgroup_at_5_11() {
        assert!(bpf_memory_in_memlock("5.10.0-46-cloud-amd64"));
        assert!(!bpf_memory_in_memlock("5.11.0"));
        assert!(!bpf_memory_in_memlock("6.1.0-57-cloud-amd64"));
        assert!(!bpf_memory_in_memlock("x"));
    }

    #[test]
    fn cap_eff_parses() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        let caps = parse_cap_eff(status).unwrap();
        assert!(can_load_bpf(caps));
        assert!(!can_load_bpf(0x3000)); // NET_ADMIN and NET_RAW only
        assert!(can_load_bpf(1 << cap::BPF));
        assert!(!can_trace(1 << cap::BPF));
        assert!(can_trace((1 << cap::BPF) | (1 << cap::PERFMON)));
        assert!(can_trace(1 << cap::SYS_ADMIN));
        assert_eq!(parse_cap_eff("nothing"), None);
    }
}
