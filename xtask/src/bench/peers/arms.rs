//! The arms: how each way of running N workers is configured, started,
//! reloaded and stopped. Every arm runs the same app with the same Node 22,
//! on 127.0.0.1, in its own process group (see procs.rs).
use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::sys::signal::Signal;

mod arm;
mod launch;

pub use arm::{App, Arm, Ctx};

use super::procs::{self, Group, Proc};

/// A started arm; stopped (by pid) when dropped.
pub struct Running {
    pub arm: Arm,
    pub port: u16,
    pub log: PathBuf,
    group: Group,
    pm2_home: Option<PathBuf>,
    tmpdir: Option<PathBuf>,
    /// The arm's description of how it was started, for the report.
    pub command: String,
}

/// Starts `arm` on `port` with `app`; files go under `dir`, unix sockets
/// under the short `sock_dir`. Returns once every worker is ready and
/// `GET /` answers 200.
pub fn start(
    ctx: &Ctx<'_>,
    arm: Arm,
    app: &App,
    port: u16,
    dir: &Path,
    sock_dir: &Path,
    extra_env: &[(String, String)],
) -> anyhow::Result<Running> {
    fs::create_dir_all(dir)?;
    let log = dir.join(format!("{}.log", arm.id()));
    let mut env: Vec<(String, String)> = app.env.clone();
    env.extend(extra_env.iter().cloned());
    let at = launch::Where {
        port,
        dir,
        sock_dir,
    };
    let mut launch = match arm {
        Arm::Agent
        | Arm::AgentKernel
        | Arm::AgentResteer
        | Arm::AgentEqual
        | Arm::AgentNoQuarantine => launch::agent(ctx, arm, app, port),
        Arm::Watt => launch::watt(ctx, app, &at, &mut env)?,
        Arm::Pm2 => launch::pm2(ctx, app, &at, &env)?,
        Arm::Cluster | Arm::Reuseport => launch::node_script(ctx, arm, app),
    };
    let cmd = &mut launch.cmd;
    if !arm.is_agent() {
        cmd.env("PORT", port.to_string());
    }
    cmd.current_dir(&app.cwd);
    cmd.env("PATH", ctx.peers.path_env()).env("NO_COLOR", "1");
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let command = format!("{cmd:?}");
    let group = Group::spawn(arm.id(), cmd, &log)?;
    let mut running = Running {
        arm,
        port,
        log,
        group,
        pm2_home: launch.pm2_home,
        tmpdir: launch.tmpdir,
        command,
    };
    let (pattern, count) = launch.ready;
    running.wait_ready(pattern, count, Duration::from_secs(90))?;
    Ok(running)
}

/// How many lines of `log` contain `pattern`.
fn count_lines(log: &Path, pattern: &str) -> usize {
    fs::read_to_string(log).map_or(0, |s| s.lines().filter(|l| l.contains(pattern)).count())
}

/// One `GET /` over a new connection: its status code.
pub fn probe(port: u16) -> Option<u16> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let head = String::from_utf8_lossy(&buf[..buf.len().min(64)]).into_owned();
    head.split(' ').nth(1)?.parse().ok()
}

impl Running {
    #[must_use]
    pub fn pid(&self) -> i32 {
        self.group.pid()
    }

    /// The log so far, last `n` lines.
    #[must_use]
    pub fn log_tail(&self, n: usize) -> String {
        procs::tail(&fs::read_to_string(&self.log).unwrap_or_default(), n)
    }

    fn wait_ready(&mut self, pattern: &str, count: usize, limit: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.group.exited() {
                bail!(
                    "{} exited ({status}) before it was ready:\n{}",
                    self.arm.label(),
                    self.log_tail(30)
                );
            }
            if count_lines(&self.log, pattern) >= count && probe(self.port) == Some(200) {
                // Record the workers it started, to kill them at the end.
                procs::refresh_all();
                return Ok(());
            }
            if started.elapsed() > limit {
                bail!(
                    "{} not ready after {limit:?} (waiting for {count} lines with {pattern:?} and GET / = 200):\n{}",
                    self.arm.label(),
                    self.log_tail(30)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `pattern` occurs more than `before` times in the log.
    fn wait_log(&self, pattern: &str, before: usize, limit: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            if count_lines(&self.log, pattern) > before {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// A rolling reload the way this arm's users do it; returns when it is
    /// over (or after 60 s) with a description of what was done.
    pub fn reload(&self, ctx: &Ctx<'_>) -> anyhow::Result<String> {
        let limit = Duration::from_mins(1);
        let signal_and_wait = |done: &str, how: &str| -> anyhow::Result<String> {
            let before = count_lines(&self.log, done);
            self.group.signal(Signal::SIGHUP);
            if self.wait_log(done, before, limit) {
                Ok(how.to_owned())
            } else {
                bail!("{how}: no {done:?} in the log within {limit:?}")
            }
        };
        match self.arm {
            Arm::Agent
            | Arm::AgentKernel
            | Arm::AgentResteer
            | Arm::AgentEqual
            | Arm::AgentNoQuarantine => signal_and_wait(
                "rolling reload finished",
                "SIGHUP to watt-agent (rolling reload)",
            ),
            Arm::Cluster => signal_and_wait(
                "cluster: reload done",
                "SIGHUP to the cluster primary (one worker at a time)",
            ),
            Arm::Reuseport => signal_and_wait(
                "reuseport: reload done",
                "SIGHUP to the launcher: restart the processes one at a time (no reload of their own)",
            ),
            Arm::Watt => {
                let mut cmd = Command::new(&ctx.peers.node);
                cmd.arg(&ctx.peers.wattpm)
                    .args(["restart", &self.pid().to_string()])
                    .env("PATH", ctx.peers.path_env())
                    .env("NO_COLOR", "1");
                if let Some(t) = &self.tmpdir {
                    cmd.env("TMPDIR", t);
                }
                procs::run_bounded("wattpm restart", &mut cmd, limit)?;
                Ok("wattpm restart (replaces the workers one at a time)".into())
            }
            Arm::Pm2 => {
                let home = self.pm2_home.as_ref().context("PM2_HOME")?;
                procs::run_bounded(
                    "pm2 reload",
                    Command::new(&ctx.peers.node)
                        .arg(&ctx.peers.pm2)
                        .args(["reload", "all"])
                        .env("PM2_HOME", home)
                        .env("PATH", ctx.peers.path_env()),
                    limit,
                )?;
                self.adopt_pm2_daemon();
                Ok("pm2 reload all".into())
            }
        }
    }

    /// If a `pm2` command started a daemon of its own, kill it with the arm.
    fn adopt_pm2_daemon(&self) {
        let Some(home) = &self.pm2_home else { return };
        if let Some(p) = fs::read_to_string(home.join("pm2.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .and_then(Proc::of)
        {
            self.group.adopt(p);
        }
    }

    /// The arm's worker processes now (for Watt: its one process).
    #[must_use]
    pub fn processes(&self) -> Vec<i32> {
        procs::tree(self.pid())
    }

    /// Stops the arm: SIGTERM to its main process, SIGKILL to whatever is
    /// left after 5 s.
    pub fn stop(mut self) {
        self.adopt_pm2_daemon();
        self.group.stop(Duration::from_secs(5));
        if let Some(t) = &self.tmpdir {
            let _ = fs::remove_dir_all(t);
        }
    }
}
