//! What the process may do: its capabilities (loading the program,
//! switching to `user`, binding a privileged port) and whether it can read
//! the workers' syscall state.
use nix::unistd::geteuid;

use super::{
    options::Options,
    report::{Check, Subject},
};
use crate::{
    config::Policy,
    preflight::{self, cap},
};

pub(super) const CAPABILITIES: Subject = Subject::agent("capabilities");
pub(super) const CAP_BPF: Subject = Subject::program("CAP_BPF");
/// Only `--bpf-stats` needs it, and only as a warning.
pub(super) const CAP_SYS_ADMIN: Subject = Subject::agent("CAP_SYS_ADMIN");
pub(super) const USER: Subject = Subject::agent("user");
pub(super) const CAP_NET_BIND_SERVICE: Subject = Subject::agent("CAP_NET_BIND_SERVICE");
pub(super) const SAMPLING: Subject = Subject::agent("worker sampling");

const CAP_FIX: &str = "run the agent as root, or give it CAP_BPF: \
    `setcap cap_bpf+ep $(command -v watt-agent)`; in Docker `--cap-add BPF`; in Kubernetes \
    `securityContext.capabilities.add: [\"BPF\"]`. Without it only `--policy kernel` works \
    (plain SO_REUSEPORT: no steering, no lossless crash)";

/// The capabilities the agent cares about, with their names.
const NAMES: [(u32, &str); 9] = [
    (cap::BPF, "CAP_BPF"),
    (cap::SYS_ADMIN, "CAP_SYS_ADMIN"),
    (cap::NET_ADMIN, "CAP_NET_ADMIN"),
    (cap::PERFMON, "CAP_PERFMON"),
    (cap::NET_BIND_SERVICE, "CAP_NET_BIND_SERVICE"),
    (cap::SETUID, "CAP_SETUID"),
    (cap::SETGID, "CAP_SETGID"),
    (cap::KILL, "CAP_KILL"),
    (cap::SYS_PTRACE, "CAP_SYS_PTRACE"),
];

fn cap_names(caps: u64) -> String {
    let held: Vec<&str> = NAMES
        .iter()
        .filter(|(c, _)| preflight::has_cap(caps, *c))
        .map(|(_, n)| *n)
        .collect();
    if held.is_empty() {
        "none of the relevant ones".into()
    } else {
        held.join(", ")
    }
}

/// The capability lines; `caps` is `None` when `CapEff` cannot be read.
pub(super) fn capabilities(caps: Option<u64>, opts: &Options) -> Vec<Check> {
    let Some(caps) = caps else {
        return vec![Check::warn(
            CAPABILITIES,
            "cannot read CapEff from /proc/self/status",
            "mount /proc",
        )];
    };
    let held = cap_names(caps);
    let mut out = vec![if preflight::can_load_bpf(caps) {
        Check::pass(
            CAP_BPF,
            format!("can load eBPF programs (effective: {held})"),
        )
    } else {
        Check::fail(
            CAP_BPF,
            format!("neither CAP_BPF nor CAP_SYS_ADMIN is effective (effective: {held})"),
            CAP_FIX,
        )
    }];
    // `run` only warns and runs without the metrics: so does doctor.
    if opts.bpf_stats && opts.policy != Policy::Kernel && !preflight::has_cap(caps, cap::SYS_ADMIN)
    {
        out.push(Check::warn(
            CAP_SYS_ADMIN,
            "--bpf-stats needs CAP_SYS_ADMIN (BPF_ENABLE_STATS): the decision-cost metrics will be absent",
            "grant CAP_SYS_ADMIN, or leave --bpf-stats off (only the decision-cost metrics need it)",
        ));
    }
    if opts.user.is_some() {
        out.extend(user_switch(caps, geteuid().is_root()));
    }
    if opts.port < unprivileged_port_start() && !preflight::has_cap(caps, cap::NET_BIND_SERVICE) {
        out.push(Check::fail(
            CAP_NET_BIND_SERVICE,
            format!("port {} is privileged", opts.port),
            "grant CAP_NET_BIND_SERVICE, run as root, or use a port >= 1024 behind a proxy",
        ));
    }
    out
}

/// With `user` set, what `run` needs: uid 0 (it refuses otherwise), and
/// the capabilities to switch to the user and signal its workers. `None`
/// when all is there: the line only appears to fail.
fn user_switch(caps: u64, root: bool) -> Option<Check> {
    let mut missing: Vec<&str> = [
        (cap::SETUID, "CAP_SETUID"),
        (cap::SETGID, "CAP_SETGID"),
        (cap::KILL, "CAP_KILL"),
    ]
    .iter()
    .filter(|(c, _)| !preflight::has_cap(caps, *c))
    .map(|(_, n)| *n)
    .collect();
    if !root {
        missing.insert(0, "uid 0");
    }
    if missing.is_empty() {
        return None;
    }
    Some(Check::fail(
        USER,
        format!(
            "`user` is set but {} missing (switching and signalling workers)",
            missing.join(", ")
        ),
        "run the agent as root to start the workers as another user, or drop `user`",
    ))
}

/// The sampler reads each worker's `/proc/<pid>/task/<pid>/syscall` (is
/// its event loop idle or blocked?), and keep-alive release copies its
/// sockets (`pidfd_getfd`): both need ptrace access to it.
pub(super) fn sampling(caps: Option<u64>, other_user: bool) -> Check {
    let scope: Option<u32> = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let ptrace = caps.is_some_and(|c| preflight::has_cap(c, cap::SYS_PTRACE));
    let caveat = "busy workers are then told by their accept queues alone, and keep-alive \
                  release cannot copy their sockets";
    match scope {
        Some(3) => Check::warn(
            SAMPLING,
            format!("Yama ptrace_scope is 3: the workers' syscall state cannot be read; {caveat}"),
            "set kernel.yama.ptrace_scope to 1 or lower",
        ),
        Some(2) if !ptrace => Check::warn(
            SAMPLING,
            format!("Yama ptrace_scope is 2 and CAP_SYS_PTRACE is missing; {caveat}"),
            "grant CAP_SYS_PTRACE, or set kernel.yama.ptrace_scope to 1",
        ),
        _ if other_user && !ptrace => Check::warn(
            SAMPLING,
            format!(
                "the workers run as another user and CAP_SYS_PTRACE is missing: their syscall \
                 state cannot be read; {caveat}"
            ),
            "grant CAP_SYS_PTRACE (Docker --cap-add SYS_PTRACE), or run the workers as the \
             agent's user",
        ),
        _ => Check::pass(
            SAMPLING,
            "the workers' syscall state and sockets are readable (busy detection, keep-alive \
             release)",
        ),
    }
}

/// The lowest port binding needs no capability for; Linux's default when
/// the sysctl cannot be read.
fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::AdminAddr, doctor::report::Level};

    fn opts() -> Options {
        Options {
            host: "127.0.0.1".parse().unwrap(),
            port: 8080,
            admin: AdminAddr::Off,
            policy: Policy::Rescue,
            user: Some("node".into()),
            bpf_stats: true,
            node: "node".into(),
            http_cache: None,
        }
    }

    #[test]
    fn without_capabilities_the_bpf_check_fails_with_the_fix() {
        let opts = opts();
        let checks = capabilities(Some(0), &opts);
        let bpf = checks.iter().find(|c| c.subject == CAP_BPF).unwrap();
        assert_eq!(bpf.level, Level::Fail);
        assert!(bpf.fix.as_deref().unwrap().contains("setcap cap_bpf+ep"));
        assert!(checks.iter().any(|c| c.subject == CAP_SYS_ADMIN));
        assert!(checks.iter().any(|c| c.subject == USER));
        let all = capabilities(Some(u64::MAX), &opts);
        assert!(all.iter().all(|c| c.level == Level::Pass), "{all:?}");
    }

    #[test]
    fn switching_users_needs_root_and_three_capabilities() {
        assert_eq!(user_switch(u64::MAX, true), None);
        let c = user_switch(0, false).unwrap();
        assert_eq!(
            c.detail,
            "`user` is set but uid 0, CAP_SETUID, CAP_SETGID, CAP_KILL missing (switching and \
             signalling workers)"
        );
        let only_uid = user_switch(u64::MAX, false).unwrap();
        assert!(
            only_uid.detail.contains("but uid 0 missing"),
            "{only_uid:?}"
        );
    }

    #[test]
    fn held_capabilities_are_named() {
        assert_eq!(cap_names(0), "none of the relevant ones");
        assert_eq!(
            cap_names(1 << cap::BPF | 1 << cap::KILL),
            "CAP_BPF, CAP_KILL"
        );
    }
}
