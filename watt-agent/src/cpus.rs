//! `--workers auto`: how many CPUs this process may really use. In a
//! container the host's count is wrong twice over: the cgroup's CPU quota
//! and the affinity mask both cap it.
use std::fs;

/// `ceil(quota / period)` from cgroup v2's `cpu.max` ("max 100000" means no
/// quota).
#[must_use]
pub fn parse_cpu_max(text: &str) -> Option<u32> {
    let mut parts = text.split_whitespace();
    let quota = parts.next()?;
    let period: u64 = parts.next()?.parse().ok()?;
    if quota == "max" || period == 0 {
        return None;
    }
    let quota: u64 = quota.parse().ok()?;
    u32::try_from(quota.div_ceil(period).max(1)).ok()
}

/// The cgroup v2 directory of this process (from `/proc/self/cgroup`'s
/// `0::/path` line).
fn own_cgroup() -> Option<String> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| format!("/sys/fs/cgroup{}", p.trim_end()))
}

/// The smallest quota on the way from this process's cgroup to the root.
fn cgroup_quota() -> Option<u32> {
    let mut dir = own_cgroup()?;
    let mut best: Option<u32> = None;
    loop {
        if let Ok(text) = fs::read_to_string(format!("{dir}/cpu.max"))
            && let Some(n) = parse_cpu_max(&text)
        {
            best = Some(best.map_or(n, |b| b.min(n)));
        }
        match dir.rfind('/') {
            Some(i) if dir.len() > "/sys/fs/cgroup".len() => dir.truncate(i),
            _ => break,
        }
    }
    best
}

/// CPUs in this thread's affinity mask.
fn affinity() -> Option<u32> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok()?;
    let n = (0..nix::sched::CpuSet::count())
        .filter(|&i| set.is_set(i).unwrap_or(false))
        .count();
    u32::try_from(n).ok().filter(|&n| n > 0)
}

/// The CPUs this process may use: min(affinity, cgroup quota), at least 1.
#[must_use]
pub fn available() -> u32 {
    let by_affinity = affinity()
        .or_else(|| {
            std::thread::available_parallelism()
                .ok()
                .and_then(|n| u32::try_from(n.get()).ok())
        })
        .unwrap_or(1);
    cgroup_quota()
        .map_or(by_affinity, |q| q.min(by_affinity))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_parses() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(2));
        assert_eq!(parse_cpu_max("150000 100000"), Some(2));
        assert_eq!(parse_cpu_max("50000 100000"), Some(1));
        assert_eq!(parse_cpu_max("garbage"), None);
    }

    #[test]
    fn available_is_at_least_one_and_at_most_the_host() {
        let n = available();
        assert!(n >= 1);
        assert!(n as usize <= std::thread::available_parallelism().unwrap().get());
    }
}
