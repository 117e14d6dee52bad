//! The arms: one app (`bench/app/cache-app.js`), one upstream, 4 workers on
//! Node 22, and five ways of caching its fetches.
use std::{
    fs,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use super::probe;
use crate::bench::peers::procs::{self, Group};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Arm {
    /// watt-agent --http-cache: the agent holds the entries (unix socket, LRU).
    AgentLocal,
    /// watt-agent --http-cache with `store = redis://` (a redis-server on loopback).
    AgentRedis,
    /// Platformatic Watt with `httpCache` (its main thread holds the entries).
    Watt,
    /// undici's `SqliteCacheStore` in every worker, one file (watt-agent without --http-cache).
    Sqlite,
    /// No cache (watt-agent without --http-cache): every fetch goes upstream.
    None,
}

impl Arm {
    pub const ALL: [Self; 5] = [
        Self::AgentLocal,
        Self::AgentRedis,
        Self::Watt,
        Self::Sqlite,
        Self::None,
    ];

    #[must_use]
    pub fn id(self) -> &'static str {
        match self {
            Self::AgentLocal => "agent-local",
            Self::AgentRedis => "agent-redis",
            Self::Watt => "watt",
            Self::Sqlite => "sqlite",
            Self::None => "none",
        }
    }

    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::AgentLocal => "watt-agent --http-cache (local store)",
            Self::AgentRedis => "watt-agent --http-cache, fleet store (redis-server)",
            Self::Watt => "Watt httpCache",
            Self::Sqlite => "undici SqliteCacheStore per worker (one file)",
            Self::None => "no cache",
        }
    }

    /// Runs under watt-agent (all but Watt).
    #[must_use]
    pub fn is_agent(self) -> bool {
        self != Self::Watt
    }
}

/// What every arm needs to start.
pub struct Ctx<'a> {
    pub root: &'a Path,
    pub agent: &'a Path,
    /// Node 22.
    pub node: &'a Path,
    /// wattpm's `cli.js` and the `node_modules` it was installed in.
    pub wattpm: &'a Path,
    pub peers_node_modules: &'a Path,
    /// undici 7's package directory (the one Watt uses).
    pub undici: &'a Path,
    pub redis: &'a Path,
    pub workers: usize,
    /// More `--http-cache` settings for the agent arms (may be empty).
    pub agent_cache: &'a str,
    pub upstream: SocketAddr,
    pub keys: usize,
}

impl Ctx<'_> {
    fn app(&self) -> PathBuf {
        self.root.join("bench/app/cache-app.js")
    }

    /// PATH with Node 22 first.
    fn path_env(&self) -> std::ffi::OsString {
        let mut paths = vec![self.node.parent().expect("node's directory").to_path_buf()];
        if let Some(p) = std::env::var_os("PATH") {
            paths.extend(std::env::split_paths(&p));
        }
        std::env::join_paths(paths).expect("PATH entries")
    }
}

/// A started arm (and its redis-server); stopped by pid when dropped.
pub struct Running {
    pub arm: Arm,
    pub port: u16,
    pub group: Group,
    pub admin: Option<SocketAddr>,
    pub redis: Option<Group>,
    pub command: String,
    pub log: PathBuf,
}

impl Running {
    /// The arm's main process: the agent, or Watt's runtime.
    #[must_use]
    pub fn pid(&self) -> i32 {
        self.group.pid()
    }

    pub fn stop(mut self) {
        self.group.stop(Duration::from_secs(10));
        if let Some(mut r) = self.redis.take() {
            r.stop(Duration::from_secs(5));
        }
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts a redis-server on loopback (no persistence) and waits until it
/// answers PING.
fn start_redis(ctx: &Ctx<'_>, dir: &Path) -> anyhow::Result<(Group, SocketAddr)> {
    let port = free_port()?;
    let mut cmd = Command::new(ctx.redis);
    cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .current_dir(dir);
    let mut group = Group::spawn("redis-server", &mut cmd, &dir.join("redis.log"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    loop {
        if ping(addr) {
            return Ok((group, addr));
        }
        if group.exited().is_some() || started.elapsed() > Duration::from_secs(15) {
            let log = fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
            group.stop(Duration::from_secs(1));
            bail!(
                "redis-server did not answer on {addr}:\n{}",
                procs::tail(&log, 10)
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn ping(addr: SocketAddr) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

/// Starts `arm` on `port`, its files in `dir` (the app's statistics in
/// `dir/stats`); returns once every worker is ready and `GET /` answers.
pub fn start(ctx: &Ctx<'_>, arm: Arm, port: u16, dir: &Path) -> anyhow::Result<Running> {
    let stats = dir.join("stats");
    fs::create_dir_all(&stats)?;
    let log = dir.join(format!("{}.log", arm.id()));
    let mut redis = None;
    let mut admin = None;
    let (mut cmd, ready) = if arm == Arm::Watt {
        (watt(ctx, port, dir)?, ("Platformatic is now listening", 1))
    } else {
        let a = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        admin = Some(a);
        let mut cmd = Command::new(ctx.agent);
        cmd.arg("run")
            .args(["--workers", &ctx.workers.to_string()])
            .args(["--port", &port.to_string()])
            .args(["--host", "127.0.0.1", "--admin", &a.to_string()]);
        let mut undici = format!("undici={}", ctx.undici.display());
        if !ctx.agent_cache.is_empty() {
            undici = format!("{undici},{}", ctx.agent_cache);
        }
        match arm {
            Arm::AgentLocal => {
                cmd.arg(format!("--http-cache={undici}"));
            }
            Arm::AgentRedis => {
                let (g, addr) = start_redis(ctx, dir)?;
                redis = Some(g);
                cmd.arg(format!("--http-cache={undici},store=redis://{addr}"));
            }
            Arm::Sqlite => {
                cmd.env("BENCH_STORE", "sqlite")
                    .env("BENCH_UNDICI", ctx.undici)
                    .env("BENCH_SQLITE", dir.join("cache.sqlite"));
            }
            Arm::None | Arm::Watt => {}
        }
        cmd.arg("--")
            .arg(ctx.node)
            .arg(ctx.app())
            .env_remove("PORT");
        (cmd, ("worker ready", ctx.workers))
    };
    cmd.current_dir(ctx.root.join("bench/app"))
        .env("PATH", ctx.path_env())
        .env("NO_COLOR", "1")
        .env("UPSTREAM", format!("http://{}", ctx.upstream))
        .env("BENCH_KEYS", ctx.keys.to_string())
        .env("BENCH_STATS_DIR", &stats);
    let command = format!("{cmd:?}");
    let group = Group::spawn(arm.id(), &mut cmd, &log)?;
    let mut running = Running {
        arm,
        port,
        group,
        admin,
        redis,
        command,
        log,
    };
    let (pattern, count) = ready;
    let started = Instant::now();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        let text = fs::read_to_string(&running.log).unwrap_or_default();
        if text.matches(pattern).count() >= count
            && probe::get(addr, "/").is_some_and(|r| r.0 == 200)
        {
            procs::refresh_all();
            return Ok(running);
        }
        if running.group.exited().is_some() || started.elapsed() > Duration::from_secs(90) {
            running.stop();
            bail!(
                "{} did not get ready (waiting for {count} lines with {pattern:?} and GET / = 200):\n{}",
                arm.label(),
                procs::tail(&text, 30)
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Platformatic Watt: a `watt.json` for `@platformatic/node` with the
/// runtime's `httpCache` on (its default store, `@platformatic/undici-cache-memory`,
/// in the main thread), started with `wattpm start`.
fn watt(ctx: &Ctx<'_>, port: u16, dir: &Path) -> anyhow::Result<Command> {
    let wdir = dir.join("watt");
    fs::create_dir_all(&wdir)?;
    let link = wdir.join("node_modules");
    if !link.exists() {
        std::os::unix::fs::symlink(ctx.peers_node_modules, &link)?;
    }
    fs::write(
        wdir.join("package.json"),
        r#"{ "name": "bench-cache-app", "version": "0.0.0", "private": true }"#,
    )?;
    let config = serde_json::json!({
        "module": "@platformatic/node",
        "node": { "main": ctx.app().to_string_lossy() },
        "runtime": {
            "server": { "hostname": "127.0.0.1", "port": port },
            "workers": ctx.workers,
            "logger": { "level": "info" },
            "httpCache": true,
        }
    });
    fs::write(
        wdir.join("watt.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    let tmp = dir.join("tmp");
    fs::create_dir_all(&tmp)?;
    let mut cmd = Command::new(ctx.node);
    cmd.arg(ctx.wattpm)
        .arg("start")
        .arg(&wdir)
        .env("TMPDIR", &tmp)
        .env("PORT", port.to_string());
    Ok(cmd)
}

/// The redis-server's process, for its footprint.
#[must_use]
pub fn redis_pid(r: &Running) -> Option<i32> {
    r.redis.as_ref().map(Group::pid)
}

/// Context for errors about the arm's log.
pub fn log_tail(r: &Running, n: usize) -> String {
    procs::tail(&fs::read_to_string(&r.log).unwrap_or_default(), n)
}

/// The upstream: `bench/app/cache-upstream.js` on Node 22, on loopback.
pub fn start_upstream(
    root: &Path,
    node: &Path,
    dir: &Path,
    delay_ms: u64,
    body_bytes: usize,
) -> anyhow::Result<(Group, SocketAddr)> {
    let port = free_port()?;
    let log = dir.join("upstream.log");
    let mut cmd = Command::new(node);
    cmd.arg(root.join("bench/app/cache-upstream.js"))
        .env("UPSTREAM_PORT", port.to_string())
        .env("UPSTREAM_DELAY_MS", delay_ms.to_string())
        .env("UPSTREAM_BODY_BYTES", body_bytes.to_string())
        .env("UPSTREAM_MAX_AGE", "60");
    let mut group = Group::spawn("upstream", &mut cmd, &log)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    while probe::upstream_count(addr).is_err() {
        if group.exited().is_some() || started.elapsed() > Duration::from_secs(15) {
            group.stop(Duration::from_secs(1));
            bail!(
                "the upstream did not start:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok((group, addr))
}

/// Node 22's version, checked against what the arms were promised.
pub fn node_version(node: &Path) -> anyhow::Result<String> {
    crate::util::output(Command::new(node).arg("--version"))
        .map(|s| s.trim().to_owned())
        .with_context(|| format!("{} --version failed", node.display()))
}
