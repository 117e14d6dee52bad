//! Running the `watt-agent` binary under test, and finding its workers.
use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead as _, BufReader},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

/// The agent binary: `WATT_AGENT_BIN` (set by `cargo xtask test`), else the
/// workspace's release build, else its debug build.
#[must_use]
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("WATT_AGENT_BIN") {
        return PathBuf::from(p);
    }
    let target = crate::root().join("target");
    let release = target.join("release/watt-agent");
    if release.exists() {
        return release;
    }
    target.join("debug/watt-agent")
}

/// The app the lifecycle tests run as workers (plain `node:http`).
pub const TEST_APP: &str = "tests/fixtures/apps/test-app.js";

/// Starts `workers` workers of [`TEST_APP`] on a free loopback port with
/// `args` and `env`, and waits until they are ready.
#[must_use]
pub fn start_test_app(workers: usize, args: &[&str], env: &[(&str, &str)]) -> Agent {
    let n = workers.to_string();
    let mut all = vec!["--workers", n.as_str()];
    all.extend_from_slice(args);
    let agent = Agent::start_with_env(
        crate::free_port("127.0.0.1"),
        &all,
        &["node", TEST_APP],
        env,
    );
    agent.wait_ready(workers, Duration::from_secs(30));
    agent
}

/// The crash tests' agent: 4 workers of [`TEST_APP`], restarted 50 ms
/// after a crash (a worker up for 500 ms does not count toward a crash
/// loop). `kernel`: with `--policy kernel` (no program), the controls.
#[must_use]
pub fn start_for_crashes(kernel: bool) -> Agent {
    let mut args = vec!["--restart-delay", "50ms", "--min-uptime", "500ms"];
    if kernel {
        args.extend(["--policy", "kernel"]);
    }
    start_test_app(4, &args, &[])
}

/// A running agent; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Agent {
    pub child: Child,
    pub port: u16,
    pub log: Arc<Mutex<Vec<String>>>,
    /// Disconnects when the log reader has read stderr to its end.
    log_done: mpsc::Receiver<()>,
}

impl Agent {
    /// Starts `watt-agent run <args> -- <command>` on `port` with the admin
    /// API off. Its stderr is collected into `log`.
    #[must_use]
    pub fn start(port: u16, args: &[&str], command: &[&str]) -> Self {
        Self::start_with_env(port, args, command, &[])
    }

    #[must_use]
    pub fn start_with_env(
        port: u16,
        args: &[&str],
        command: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        crate::require_root();
        let mut cmd = Command::new(binary());
        cmd.arg("run").arg("--port").arg(port.to_string());
        if !args.contains(&"--host") {
            cmd.args(["--host", "127.0.0.1"]);
        }
        if !args.iter().any(|a| a.starts_with("--admin")) {
            cmd.args(["--admin", "off"]);
        }
        cmd.args(args)
            .arg("--")
            .args(command)
            .current_dir(crate::root())
            .env_remove("PORT")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary().display()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped");
        let sink = Arc::clone(&log);
        let (done, log_done) = mpsc::channel::<()>();
        thread::spawn(move || {
            let _done = done; // dropped at EOF: wait_exit's signal
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("WATT_TEST_VERBOSE").is_some() {
                    eprintln!("agent: {line}");
                }
                sink.lock().expect("log").push(line);
            }
        });
        Self {
            child,
            port,
            log,
            log_done,
        }
    }

    #[must_use]
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Waits until the log has a line containing `needle` `count` times.
    #[must_use]
    pub fn wait_log(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log_count(needle) >= count {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[must_use]
    pub fn log_count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    #[must_use]
    pub fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// Waits until `n` workers are ready (per the log) and the port answers.
    pub fn wait_ready(&self, n: usize, timeout: Duration) {
        assert!(
            self.wait_log("worker ready", n, timeout),
            "{n} workers not ready within {timeout:?}; agent log:\n{}",
            self.log_text()
        );
    }

    /// The agent's direct children: the worker processes.
    #[must_use]
    pub fn worker_pids(&self) -> BTreeSet<i32> {
        children(self.pid())
    }

    /// Sends `signal` to the agent.
    pub fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.pid(), signal) };
    }

    /// Waits for the agent to exit; returns its exit code (or None on timeout).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                // The agent's last lines may still be in the pipe: read them
                // before anyone looks at the log.
                let _ = self.log_done.recv_timeout(Duration::from_secs(5));
                return Some(status.code().unwrap_or(-1));
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGTERM);
            if self.wait_exit(Duration::from_secs(15)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// Pids whose parent is `parent`.
#[must_use]
pub fn children(parent: i32) -> BTreeSet<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| ppid(pid) == Some(parent))
        .collect()
}

/// The parent pid of `pid`, if it exists.
#[must_use]
pub fn ppid(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `pid` exists and is not a zombie.
#[must_use]
pub fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rfind(')')
            .and_then(|i| s[i + 2..].chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X')
    })
}

/// The start time of `pid` (field 22 of its stat, in clock ticks since
/// boot): with it a pid that the kernel handed to a new process is not
/// mistaken for the old one.
#[must_use]
pub fn start_time(pid: i32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 2..]
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Whether the process `pid` that started at `started` still runs.
#[must_use]
pub fn same_alive(pid: i32, started: Option<u64>) -> bool {
    alive(pid) && start_time(pid) == started
}

/// Whether something accepts TCP connections on `addr`.
#[must_use]
pub fn port_open(addr: SocketAddr) -> bool {
    // A connect to a port in the ephemeral range that nothing listens on
    // can succeed by connecting to itself (TCP simultaneous open, when the
    // kernel picks that very port as the source): not a listener. Go's
    // dialer checks for the same thing.
    TcpStream::connect_timeout(&addr, Duration::from_millis(200))
        .is_ok_and(|s| s.local_addr().ok() != s.peer_addr().ok())
}
