//! `watt-agent doctor`: can this machine run the agent? One line per check,
//! `PASS`, `WARN`, `FAIL` or `INFO`, and for what fails, the fix.
//!
//! Exit code 0 when nothing fails, 3 (`exit::ENVIRONMENT`) otherwise.
use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    os::fd::{FromRawFd as _, OwnedFd},
    process::Command,
};

use nix::sys::resource::RLIM_INFINITY;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::{
    admin::{client, status::Status},
    config::{AdminAddr, Policy},
    exit, listeners, preflight,
    preflight::cap,
    sampler::{ListenerQuery, QueueSource, QueueSourceKind},
    steering::{Steering, SteeringError},
};

/// Node versions the shim supports.
pub const MIN_NODE: u32 = 18;

/// What to check, from the command line and the config file.
#[derive(Clone, Debug)]
pub struct Options {
    pub host: IpAddr,
    pub port: u16,
    pub admin: AdminAddr,
    pub policy: Policy,
    pub user: Option<String>,
    pub bpf_stats: bool,
    /// The Node binary to ask for its version (`node` in PATH).
    pub node: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Pass,
    /// Works, with a caveat.
    Warn,
    /// The agent will not run (as configured) until fixed.
    Fail,
    /// Neither good nor bad: for the record.
    Info,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pass => "PASS",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
            Self::Info => "INFO",
        })
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub level: Level,
    pub what: &'static str,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    fn pass(what: &'static str, detail: impl Into<String>) -> Self {
        Self {
            level: Level::Pass,
            what,
            detail: detail.into(),
            fix: None,
        }
    }

    fn info(what: &'static str, detail: impl Into<String>) -> Self {
        Self {
            level: Level::Info,
            what,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fail(what: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            level: Level::Fail,
            what,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn warn(what: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            level: Level::Warn,
            what,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}  {:<15} {}", self.level, self.what, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n      fix: {fix}")?;
        }
        Ok(())
    }
}

const CAP_FIX: &str = "run the agent as root, or give it CAP_BPF: \
    `setcap cap_bpf+ep $(command -v watt-agent)`; in Docker `--cap-add BPF`; in Kubernetes \
    `securityContext.capabilities.add: [\"BPF\"]`. Without it only `--policy kernel` works \
    (plain SO_REUSEPORT: no steering, no lossless crash)";

/// Runs every check.
#[must_use]
pub fn checks(opts: &Options) -> Vec<Check> {
    let needs_bpf = opts.policy != Policy::Kernel;
    // As the agent does before its first map: kernels before 5.11 charge
    // maps to RLIMIT_MEMLOCK, and the probe map below would fail on a
    // container's 64 KiB default. (The memlock line reports what remains.)
    preflight::raise_memlock();
    let mut out = vec![kernel(), bpf_syscall()];
    let caps = preflight::effective_caps().ok();
    out.extend(capabilities(caps, opts));
    out.push(program(needs_bpf));
    out.push(memlock());
    if !needs_bpf {
        // Nothing below the program matters to `--policy kernel`: report
        // what the BPF checks found, but not as failures.
        for c in &mut out {
            if c.level == Level::Fail
                && matches!(
                    c.what,
                    "kernel" | "bpf syscall" | "CAP_BPF" | "steering" | "memlock"
                )
            {
                c.level = Level::Info;
                c.fix = None;
                c.detail.push_str(" (not needed with --policy kernel)");
            }
        }
    }
    out.push(sampling(caps, opts.user.is_some()));
    out.push(queue_depths(SocketAddr::new(opts.host, opts.port)));
    out.push(bpffs());
    out.push(node(&opts.node));
    // Inside a running deployment the port and the admin address are the
    // running agent's own: recognise it instead of failing.
    let running = running_agent(&opts.admin);
    out.push(port(
        SocketAddr::new(opts.host, opts.port),
        running.as_ref(),
    ));
    out.push(admin(&opts.admin, running.as_ref()));
    out
}

/// The agent answering at `addr`, if any.
fn running_agent(addr: &AdminAddr) -> Option<Status> {
    if *addr == AdminAddr::Off {
        return None;
    }
    let reply = client::call(addr, hyper::Method::GET, "/status").ok()?;
    serde_json::from_str(&reply.body).ok()
}

/// Prints the report; returns the exit code.
#[must_use]
pub fn run(opts: &Options) -> i32 {
    let report = checks(opts);
    for c in &report {
        println!("{c}");
    }
    let failed = report.iter().filter(|c| c.level == Level::Fail).count();
    if failed == 0 {
        println!("\nall checks passed: watt-agent can run here");
        exit::OK
    } else {
        println!("\n{failed} check(s) failed: see the fixes above");
        exit::ENVIRONMENT
    }
}

fn kernel() -> Check {
    const WHAT: &str = "kernel";
    let (major, minor) = preflight::MIGRATION_KERNEL;
    match preflight::kernel_release() {
        Ok(release) if preflight::has_migration(&release) => Check::pass(
            WHAT,
            format!(
                "Linux {release}: connection migration ({major}.{minor}+), lossless crash and drain"
            ),
        ),
        Ok(release) => Check::warn(
            WHAT,
            format!(
                "Linux {release} predates connection migration ({major}.{minor}): the agent runs \
                 its select-only program, which steers new connections but cannot move a leaving \
                 worker's queue, so a crash or drain resets the connections queued on it (as plain \
                 SO_REUSEPORT does), and there is no queue rescue"
            ),
            format!("upgrade to Linux {major}.{minor} or newer for lossless crash and drain"),
        ),
        Err(e) => Check::warn(
            WHAT,
            format!("cannot read /proc/sys/kernel/osrelease: {e}"),
            "mount /proc",
        ),
    }
}

/// Can the balancer read the listeners' accept-queue depths, and from
/// where? sock_diag is asked for a real dump: a socket that opens while
/// every dump fails (no `tcp_diag` module) would otherwise pass.
fn queue_depths(addr: SocketAddr) -> Check {
    const WHAT: &str = "queue depths";
    match QueueSource::open(&ListenerQuery::for_addr(addr)) {
        Ok(q) if q.kind() == QueueSourceKind::SockDiag => {
            Check::pass(WHAT, "sock_diag dumps work (microseconds per read)")
        }
        Ok(_) => Check::warn(
            WHAT,
            "sock_diag does not work here; the agent reads /proc/net/tcp instead, which costs \
             milliseconds per read on a host with many connections",
            "load the tcp_diag and inet_diag modules (`modprobe tcp_diag`), or allow \
             NETLINK_SOCK_DIAG sockets in the seccomp/LSM policy",
        ),
        Err((diag, proc)) => Check::warn(
            WHAT,
            format!(
                "no source of queue depths: sock_diag ({}), /proc/net/tcp ({}); busy detection \
                 still works, /status and the metrics show no queue depths",
                crate::error_chain(&diag),
                crate::error_chain(&proc)
            ),
            "load tcp_diag (`modprobe tcp_diag`) or mount /proc",
        ),
    }
}

/// Creates (and closes) a one-entry array map: the cheapest proof that
/// `bpf(2)` is there and allowed.
fn bpf_syscall() -> Check {
    const WHAT: &str = "bpf syscall";
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
    // SAFETY: bpf(BPF_MAP_CREATE) with a valid, fully initialised attribute
    // of the size passed; the kernel zero-fills the fields beyond it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            &raw const attr,
            size_of::<MapCreate>(),
        )
    };
    if let Ok(fd) = i32::try_from(fd)
        && fd >= 0
    {
        // SAFETY: the kernel just returned this new descriptor to us.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        return Check::pass(WHAT, "bpf(2) is available");
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => Check::fail(
            WHAT,
            format!("bpf(2) is denied ({err})"),
            "grant CAP_BPF (see the CAP_BPF line); in a container the seccomp profile may also \
             block bpf(2): allow it (Docker: --security-opt seccomp=<a profile allowing bpf>)",
        ),
        Some(libc::ENOSYS) => Check::fail(
            WHAT,
            "bpf(2) does not exist here (ENOSYS)",
            "use a kernel built with CONFIG_BPF_SYSCALL=y, or allow bpf(2) in the seccomp \
             profile; else use --policy kernel",
        ),
        _ => Check::fail(
            WHAT,
            format!("bpf(2) failed: {err}"),
            "check the kernel's BPF support (CONFIG_BPF_SYSCALL) and the container's seccomp \
             profile",
        ),
    }
}

fn cap_names(caps: u64) -> String {
    let names = [
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
    let held: Vec<&str> = names
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

fn capabilities(caps: Option<u64>, opts: &Options) -> Vec<Check> {
    let Some(caps) = caps else {
        return vec![Check::warn(
            "capabilities",
            "cannot read CapEff from /proc/self/status",
            "mount /proc",
        )];
    };
    let mut out = Vec::new();
    let held = cap_names(caps);
    if preflight::can_load_bpf(caps) {
        out.push(Check::pass(
            "CAP_BPF",
            format!("can load eBPF programs (effective: {held})"),
        ));
    } else {
        out.push(Check::fail(
            "CAP_BPF",
            format!("neither CAP_BPF nor CAP_SYS_ADMIN is effective (effective: {held})"),
            CAP_FIX,
        ));
    }
    // `run` only warns and runs without the metrics: so does doctor.
    if opts.bpf_stats && opts.policy != Policy::Kernel && !preflight::has_cap(caps, cap::SYS_ADMIN)
    {
        out.push(Check::warn(
            "CAP_SYS_ADMIN",
            "--bpf-stats needs CAP_SYS_ADMIN (BPF_ENABLE_STATS): the decision-cost metrics will be absent",
            "grant CAP_SYS_ADMIN, or leave --bpf-stats off (only the decision-cost metrics need it)",
        ));
    }
    if opts.user.is_some() {
        // What `run` needs: uid 0 (it refuses otherwise), and the
        // capabilities to switch to the user and signal its workers.
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
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
        if !missing.is_empty() {
            out.push(Check::fail(
                "user",
                format!(
                    "`user` is set but {} missing (switching and signalling workers)",
                    missing.join(", ")
                ),
                "run the agent as root to start the workers as another user, or drop `user`",
            ));
        }
    }
    if opts.port < unprivileged_port_start() && !preflight::has_cap(caps, cap::NET_BIND_SERVICE) {
        out.push(Check::fail(
            "CAP_NET_BIND_SERVICE",
            format!("port {} is privileged", opts.port),
            "grant CAP_NET_BIND_SERVICE, run as root, or use a port >= 1024 behind a proxy",
        ));
    }
    out
}

/// The sampler reads each worker's `/proc/<pid>/task/<pid>/syscall` (is
/// its event loop idle or blocked?), which needs ptrace access to it.
fn sampling(caps: Option<u64>, other_user: bool) -> Check {
    const WHAT: &str = "worker sampling";
    let scope: Option<u32> = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let ptrace = caps.is_some_and(|c| preflight::has_cap(c, cap::SYS_PTRACE));
    let caveat = "busy workers are then told by their accept queues alone";
    match scope {
        Some(3) => Check::warn(
            WHAT,
            format!("Yama ptrace_scope is 3: the workers' syscall state cannot be read; {caveat}"),
            "set kernel.yama.ptrace_scope to 1 or lower",
        ),
        Some(2) if !ptrace => Check::warn(
            WHAT,
            format!("Yama ptrace_scope is 2 and CAP_SYS_PTRACE is missing; {caveat}"),
            "grant CAP_SYS_PTRACE, or set kernel.yama.ptrace_scope to 1",
        ),
        _ if other_user && !ptrace => Check::warn(
            WHAT,
            format!(
                "the workers run as another user and CAP_SYS_PTRACE is missing: their syscall \
                 state cannot be read; {caveat}"
            ),
            "grant CAP_SYS_PTRACE (Docker --cap-add SYS_PTRACE), or run the workers as the \
             agent's user",
        ),
        _ => Check::pass(
            WHAT,
            "the workers' syscall state is readable (busy detection)",
        ),
    }
}

fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

/// Loads the embedded program and attaches it to a throwaway listener:
/// proves SK_REUSEPORT steering end to end, and says which mode runs.
fn program(needed: bool) -> Check {
    const WHAT: &str = "steering";
    let steering = match Steering::load() {
        Ok(s) => s,
        Err(e) => {
            let detail = format!(
                "cannot load the SK_REUSEPORT program: {}",
                crate::error_chain(&e)
            );
            let fix = match e {
                SteeringError::Permission => "grant CAP_BPF (see the CAP_BPF line)".to_owned(),
                SteeringError::Memlock { .. } => "see the memlock line".to_owned(),
                SteeringError::NoObject => {
                    "rebuild the agent with its eBPF program: `cargo xtask build`".to_owned()
                }
                SteeringError::Verify { .. } => "the verifier's last lines above say what it \
                    refused: report them with `uname -r`; meanwhile --policy kernel runs without \
                    the program"
                    .to_owned(),
                _ => "check the kernel's BPF support, or use --policy kernel".to_owned(),
            };
            return Check::fail(WHAT, detail, fix);
        }
    };
    let mode = steering.mode().as_str();
    if !needed {
        return Check::pass(WHAT, format!("the SK_REUSEPORT {mode} program loads"));
    }
    match probe_listener().map(|l| steering.attach(&l)) {
        Ok(Ok(())) => Check::pass(
            WHAT,
            format!("the SK_REUSEPORT {mode} program loads and attaches"),
        ),
        Ok(Err(e)) => Check::fail(
            WHAT,
            format!(
                "the program loads but does not attach: {}",
                crate::error_chain(&e)
            ),
            "check the kernel's SO_ATTACH_REUSEPORT_EBPF support, or use --policy kernel",
        ),
        Err(e) => Check::warn(
            WHAT,
            format!("the program loads; no loopback listener to attach it to: {e}"),
            "bring up the loopback interface",
        ),
    }
}

fn probe_listener() -> std::io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_port(true)?;
    s.bind(&SockAddr::from(SocketAddr::from(([127, 0, 0, 1], 0))))?;
    s.listen(1)?;
    Ok(s)
}

fn bpffs() -> Check {
    const WHAT: &str = "bpffs";
    let mounted = std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
        m.lines().any(|l| {
            l.split_once(" - ")
                .is_some_and(|(_, r)| r.starts_with("bpf "))
        })
    });
    if mounted {
        Check::pass(WHAT, "mounted (not needed: the agent pins nothing)")
    } else {
        Check::info(WHAT, "not mounted (fine: the agent pins nothing)")
    }
}

fn memlock() -> Check {
    const WHAT: &str = "memlock";
    let Some((soft, hard)) = preflight::memlock_limits() else {
        return Check::warn(
            WHAT,
            "cannot read RLIMIT_MEMLOCK",
            "none needed on Linux 5.11+",
        );
    };
    let show = |v: u64| {
        if v == RLIM_INFINITY {
            "unlimited".to_owned()
        } else {
            format!("{} KiB", v / 1024)
        }
    };
    let release = preflight::kernel_release().unwrap_or_default();
    if !preflight::bpf_memory_in_memlock(&release) {
        return Check::pass(
            WHAT,
            format!(
                "{} (not used: since Linux 5.11 BPF memory is charged to the cgroup)",
                show(soft)
            ),
        );
    }
    if soft == RLIM_INFINITY || hard == RLIM_INFINITY {
        return Check::pass(WHAT, format!("{} (the agent raises it)", show(soft)));
    }
    if !preflight::effective_caps().is_ok_and(|c| preflight::has_cap(c, cap::SYS_RESOURCE)) {
        return Check::fail(
            WHAT,
            format!(
                "{} and the hard limit is {}: kernels before 5.11 charge BPF maps to it, and \
                 without CAP_SYS_RESOURCE the agent cannot raise it",
                show(soft),
                show(hard)
            ),
            "grant CAP_SYS_RESOURCE (deploy/overlays/eks-al2), or raise the limit: \
             `ulimit -l unlimited`, LimitMEMLOCK=infinity, or the container runtime's memlock ulimit",
        );
    }
    Check::warn(
        WHAT,
        format!("{} and the hard limit is {}", show(soft), show(hard)),
        "raise it: `ulimit -l unlimited`, LimitMEMLOCK=infinity in systemd, or run as root",
    )
}

/// `v20.11.1` → 20.
#[must_use]
pub fn parse_node_major(version: &str) -> Option<u32> {
    version
        .trim()
        .strip_prefix('v')?
        .split('.')
        .next()?
        .parse()
        .ok()
}

fn node(binary: &str) -> Check {
    const WHAT: &str = "node";
    let fix = format!(
        "install Node.js {MIN_NODE} or newer and put it in PATH (or start the workers with its full path)"
    );
    match Command::new(binary).arg("--version").output() {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let path = which(binary).unwrap_or_else(|| binary.to_owned());
            match parse_node_major(&version) {
                Some(major) if major >= MIN_NODE => {
                    Check::pass(WHAT, format!("{version} at {path}"))
                }
                Some(_) => Check::fail(
                    WHAT,
                    format!("{version} at {path} is too old (needs {MIN_NODE} or newer)"),
                    fix,
                ),
                None => Check::warn(
                    WHAT,
                    format!("{path} --version printed {version:?}"),
                    "make sure `node` is Node.js",
                ),
            }
        }
        Ok(out) => Check::fail(
            WHAT,
            format!("`{binary} --version` failed ({})", out.status),
            fix,
        ),
        Err(e) => Check::fail(WHAT, format!("`{binary}` not found: {e}"), fix),
    }
}

fn which(binary: &str) -> Option<String> {
    if binary.contains('/') {
        return Some(binary.to_owned());
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(binary))
            .find(|p| p.is_file())
            .map(|p| p.display().to_string())
    })
}

fn port(addr: SocketAddr, running: Option<&Status>) -> Check {
    const WHAT: &str = "port";
    let Err(e) = listeners::ensure_port_free(addr) else {
        return Check::pass(WHAT, format!("{addr} is free"));
    };
    let ours = running.filter(|s| {
        s.listen
            .parse::<SocketAddr>()
            .is_ok_and(|l| l.port() == addr.port())
    });
    match ours {
        Some(s) => Check::info(
            WHAT,
            format!("{addr} is served by the running watt-agent (pid {})", s.pid),
        ),
        None => Check::fail(
            WHAT,
            format!("{addr}: {}", crate::error_chain(&e)),
            "stop what listens there (`ss -ltnp sport = :PORT`), or choose another --port",
        ),
    }
}

fn admin(addr: &AdminAddr, running: Option<&Status>) -> Check {
    const WHAT: &str = "admin API";
    if let Some(s) = running {
        return Check::pass(
            WHAT,
            format!("watt-agent {} (pid {}) answers at {addr}", s.version, s.pid),
        );
    }
    match addr {
        AdminAddr::Off => Check::info(WHAT, "off"),
        AdminAddr::Tcp(a) => match std::net::TcpListener::bind(a) {
            Ok(_) => Check::pass(WHAT, format!("{a} is free")),
            Err(e) => Check::warn(
                WHAT,
                format!("cannot listen on {a}: {e}"),
                "stop the other agent, or choose another --admin address",
            ),
        },
        AdminAddr::Unix(p) => {
            let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
            match dir {
                Some(d) if !d.is_dir() => Check::warn(
                    WHAT,
                    format!("{} does not exist", d.display()),
                    "create the directory of the admin socket",
                ),
                _ => Check::pass(WHAT, format!("unix:{}", p.display())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_versions_parse() {
        assert_eq!(parse_node_major("v20.20.2\n"), Some(20));
        assert_eq!(parse_node_major("v18.0.0"), Some(18));
        assert_eq!(parse_node_major("20.1"), None);
    }

    #[test]
    fn a_failed_check_prints_its_fix_on_the_next_line() {
        let c = Check::fail("CAP_BPF", "missing", "grant it");
        assert_eq!(
            c.to_string(),
            "FAIL  CAP_BPF         missing\n      fix: grant it"
        );
        assert_eq!(
            Check::pass("x", "ok").to_string(),
            "PASS  x               ok"
        );
    }

    #[test]
    fn without_capabilities_the_bpf_check_fails_with_the_fix() {
        let opts = Options {
            host: "127.0.0.1".parse().unwrap(),
            port: 8080,
            admin: AdminAddr::Off,
            policy: Policy::Rescue,
            user: Some("node".into()),
            bpf_stats: true,
            node: "node".into(),
        };
        let checks = capabilities(Some(0), &opts);
        let bpf = checks.iter().find(|c| c.what == "CAP_BPF").unwrap();
        assert_eq!(bpf.level, Level::Fail);
        assert!(bpf.fix.as_deref().unwrap().contains("setcap cap_bpf+ep"));
        assert!(checks.iter().any(|c| c.what == "CAP_SYS_ADMIN"));
        assert!(checks.iter().any(|c| c.what == "user"));
        let all = capabilities(Some(u64::MAX), &opts);
        assert!(all.iter().all(|c| c.level == Level::Pass), "{all:?}");
    }

    #[test]
    fn a_missing_node_fails() {
        let c = node("/nonexistent/node");
        assert_eq!(c.level, Level::Fail);
        assert!(c.fix.unwrap().contains("Node.js 18"));
    }
}
