//! Killing a worker while knowing exactly which connections it had
//! accepted: freeze it (SIGSTOP), list the TCP sockets it holds, then
//! SIGKILL. Those connections die with it; every other client must be
//! served. Logging accepts from inside the app would leave a gap between
//! `accept` and the log line; the frozen process has none.
use std::{
    collections::HashSet,
    fs, thread,
    time::{Duration, Instant},
};

/// Socket inodes `pid` holds.
fn socket_inodes(pid: i32) -> HashSet<u64> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    dir.flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Remote ports of the connections to `local_port` whose inode is in
/// `inodes`, from /proc/net/tcp and tcp6.
fn remote_ports(inodes: &HashSet<u64>, local_port: u16) -> HashSet<u16> {
    let mut out = HashSet::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let port =
                |addr: &str| u16::from_str_radix(addr.rsplit(':').next().unwrap_or(""), 16).ok();
            let Ok(inode) = f[9].parse::<u64>() else {
                continue;
            };
            if inodes.contains(&inode)
                && port(f[1]) == Some(local_port)
                && let Some(remote) = port(f[2])
                && remote != 0
            {
                out.insert(remote);
            }
        }
    }
    out
}

fn state(pid: i32) -> Option<char> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 2..].chars().next()
}

/// Client ports of the connections `pid` holds (has accepted) on `port`.
#[must_use]
pub fn accepted(pid: i32, port: u16) -> HashSet<u16> {
    remote_ports(&socket_inodes(pid), port)
}

/// Freezes `pid`, records the client ports of the connections it accepted
/// on `port`, keeps it frozen for `hold` (connections keep arriving and
/// queue on its listener, as on a worker that stalls before it dies), and
/// SIGKILLs it. Returns those client ports.
#[must_use]
pub fn freeze_and_kill(pid: i32, port: u16, hold: Duration) -> HashSet<u16> {
    freeze_and_kill_all(&[pid], port, hold)
}

/// [`freeze_and_kill`] for several processes at once: all frozen first,
/// then all held for `hold`, then all killed (SIGKILL) together (a query of death
/// that a proxy replays on every worker). Returns the client ports any of
/// them had accepted.
#[must_use]
pub fn freeze_and_kill_all(pids: &[i32], port: u16, hold: Duration) -> HashSet<u16> {
    for &pid in pids {
        // SAFETY: signalling worker processes started by the agent under test.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| !matches!(state(p), Some('T') | None)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    let mut clients: HashSet<u16> = pids.iter().flat_map(|&p| accepted(p, port)).collect();
    thread::sleep(hold);
    clients.extend(pids.iter().flat_map(|&p| accepted(p, port)));
    for &pid in pids {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    clients
}

/// `rounds` times, 1.5 s apart: freezes and kills every worker of `agent`
/// at once ([`freeze_and_kill_all`]), then waits (bounded) until as many
/// new ones are ready. Returns the client ports the killed workers had
/// accepted.
#[must_use]
pub fn kill_every_worker(
    agent: &crate::agent::Agent,
    workers: usize,
    rounds: usize,
) -> HashSet<u16> {
    let mut accepted = HashSet::new();
    for round in 0..rounds {
        thread::sleep(Duration::from_millis(1500));
        let pids: Vec<i32> = agent.worker_pids().into_iter().collect();
        assert_eq!(
            pids.len(),
            workers,
            "workers before round {round}: {pids:?}"
        );
        accepted.extend(freeze_and_kill_all(
            &pids,
            agent.port,
            Duration::from_millis(50),
        ));
        assert!(
            crate::wait_until(Duration::from_secs(15), || {
                let now = agent.worker_pids();
                now.len() == workers && now.iter().all(|p| !pids.contains(p))
            }),
            "the workers did not come back after round {round}"
        );
        // ("worker ready after" is the lifecycle's line; the balancer's
        // "worker ready again" is about busy workers.)
        assert!(
            agent.wait_log(
                "worker ready after",
                workers * (round + 2),
                Duration::from_secs(15)
            ),
            "{}",
            agent.log_text()
        );
    }
    accepted
}
