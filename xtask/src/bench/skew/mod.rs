//! `cargo xtask bench skew`: what the load-aware policy does for tail
//! latency when some requests block a worker's event loop, what it costs,
//! and that it costs nothing when the load is uniform. Prints a table and
//! writes `bench/results/skew-<date>.{json,md}`; asserts nothing.
//!
//! Runs, each against a fresh agent with 4 workers of the test app:
//! - baseline: fast requests only (new connection each, open loop);
//! - skew: the same fast requests plus event-loop-blocking ones, under the
//!   default policy, `hash` and `kernel`, and the default policy at other
//!   ticks (reaction vs. the agent's CPU);
//! - uniform: a higher rate of fast requests, default policy vs. `kernel`;
//! - keepalive: the skew mix over 50 kept-alive connections, with
//!   keep-alive release (the default), without it, and under `kernel`,
//!   next to a keep-alive baseline ([`keepalive`]);
//! - idle: 16 workers and no traffic for a minute: the agent's CPU and RSS.
//!
//! With `--neighbour`, a run has a CPU-heavy process beside it, pinned to
//! one core ([`neighbour`]).
//!
//! Each run's agent log stays in `target/bench-skew/<run>.log`.
mod keepalive;
mod neighbour;
mod report;

use std::{
    fs,
    net::SocketAddr,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::{
    loadgen::{self, Connections, Plan, Summary},
    peers::{
        install,
        procs::{self, Group},
    },
};
use crate::{build, setup, util};

#[derive(clap::Args)]
pub struct Args {
    /// Measured seconds per run (after a 2 s warm-up).
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Fast requests per second.
    #[arg(long, default_value_t = 300.0)]
    pub rate: f64,
    /// Blocking requests per second, and how long each blocks its worker.
    #[arg(long, default_value_t = 8.0)]
    pub block_rate: f64,
    #[arg(long, default_value_t = 100)]
    pub block_ms: u64,
    /// Fast requests per second of the uniform-load comparison.
    #[arg(long, default_value_t = 1500.0)]
    pub uniform_rate: f64,
    /// The kinds of block to compare (the test app's endpoints): each runs
    /// under the default policy with the kernel's loop signal, with the
    /// `/proc` signal, and under `--policy kernel`.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "block,burn,readsync,writesync,exec"
    )]
    pub kinds: Vec<String>,
    /// Ticks to compare besides the default.
    #[arg(long, value_delimiter = ',', default_value = "500us,1ms")]
    pub ticks: Vec<String>,
    /// Seconds of the idle measurement with 16 workers (0 skips it).
    #[arg(long, default_value_t = 60)]
    pub idle: u64,
    /// Only the runs whose name contains one of these, comma-separated
    /// (e.g. `uniform` or `baseline,kind`); skips the idle measurement and
    /// writes no results file.
    #[arg(long, value_delimiter = ',')]
    pub only: Option<Vec<String>>,
    /// A CPU-heavy neighbour (a busy loop pinned to one core) beside each
    /// run, from before the warm-up to the end: `on` (what `--neighbour`
    /// alone means), `off`, or `both` (each run without, then with one).
    #[arg(
        long,
        value_enum,
        default_value = "off",
        num_args = 0..=1,
        default_missing_value = "on"
    )]
    pub neighbour: neighbour::Mode,
    /// The core the neighbour is pinned to (default: the last CPU).
    #[arg(long)]
    pub neighbour_core: Option<usize>,
}

#[derive(Serialize)]
struct Run {
    name: String,
    policy: String,
    tick: String,
    loop_signal: String,
    /// Agent flags besides policy, tick and loop signal.
    flags: Vec<String>,
    connections: Connections,
    fast: Summary,
    block: Option<Summary>,
    /// The agent's CPU over the measured window, % of one core.
    agent_cpu_percent: f64,
    rescues: Option<u64>,
    /// The agent's keep-alive release counters at the end of the run (none
    /// when its `/metrics` could not be read).
    released: Option<keepalive::Released>,
    /// Kept-alive connections the client found closed by the server when
    /// about to reuse them, and reopened (warm-up included).
    reopened: u64,
    /// Fast requests answered after more than [`SLOW`]: they waited behind
    /// a block.
    fast_slow: u64,
    /// The CPU-heavy neighbour beside the run, if any.
    neighbour: Option<neighbour::Use>,
}

/// A fast request this slow waited behind a block (a fast one takes well
/// under a millisecond here; a block, 100 ms by default).
const SLOW: Duration = Duration::from_millis(20);

/// The file name of a run's agent log: `keepalive skew, release off` →
/// `keepalive-skew-release-off`.
fn file_name(run: &str) -> String {
    run.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join("-")
        .to_ascii_lowercase()
}

impl Run {
    /// Failed requests of every class.
    fn failed(&self) -> u64 {
        self.fast.failed + self.block.as_ref().map_or(0, |b| b.failed)
    }
}

/// How one run starts its agent, and what runs beside it.
struct Setting<'a> {
    policy: &'a str,
    loop_signal: &'a str,
    tick: &'a str,
    /// More agent flags, e.g. `--keepalive-release=false`.
    flags: &'a [&'a str],
    workers: usize,
    /// The core of a CPU-heavy neighbour beside the run, if any.
    neighbour: Option<usize>,
}

impl Setting<'_> {
    fn agent_flags(&self) -> Vec<&str> {
        let mut flags = vec![
            "--policy",
            self.policy,
            "--tick",
            self.tick,
            "--loop-signal",
            self.loop_signal,
        ];
        flags.extend(self.flags);
        flags
    }
}

#[derive(Serialize)]
struct Idle {
    workers: usize,
    seconds: u64,
    agent_cpu_percent: f64,
    /// CPU time is counted in clock ticks (10 ms): the resolution of the
    /// percentage above.
    cpu_resolution_percent: f64,
    agent_rss_kib: u64,
    agent_threads: u64,
}

#[derive(Serialize)]
struct Results {
    /// UTC, e.g. 2026-11-27T10:50:00Z.
    date: String,
    machine: std::collections::BTreeMap<String, String>,
    /// The agent's build (`git rev-parse`, `-dirty` when uncommitted).
    commit: String,
    node: String,
    runs: Vec<Run>,
    idle: Option<Idle>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    super::peers::reexec_release()?;
    setup::run(&setup::Options {
        check: false,
        fixtures: true,
    })?;
    if !util::is_root() {
        bail!(
            "the benchmark runs the agent, which loads eBPF: run it as root (sudo -E cargo xtask bench skew)"
        );
    }
    procs::install_cleanup();
    let agent = build::release_binary()?;
    let root = util::root();
    let app = root.join("tests/fixtures/apps/test-app.js");
    let dir = util::target_dir().join("bench-skew");
    fs::create_dir_all(&dir)?;
    let runs = measure_all(args, &agent, &app, &dir)?;

    let idle = (args.idle > 0 && args.only.is_none())
        .then(|| idle(&agent, &app, &dir, Duration::from_secs(args.idle)))
        .transpose()?;
    if let Some(i) = &idle {
        println!(
            "idle: {} workers, {} s, agent CPU {:.3}% of a core, RSS {} KiB",
            i.workers, i.seconds, i.agent_cpu_percent, i.agent_rss_kib
        );
    }
    let results = Results {
        date: super::peers::stamp_and_date(std::time::SystemTime::now()).1,
        machine: install::machine(),
        commit: install::git_rev(&root),
        node: util::output(Command::new("node").arg("--version"))
            .unwrap_or_default()
            .trim()
            .to_owned(),
        runs,
        idle,
    };
    if args.only.is_some() {
        // A subset: printed above, but it does not replace the full results.
        return Ok(());
    }
    report::write(&root, &results)
}

/// Runs each selected run against a fresh agent, prints it as it ends,
/// and keeps it.
struct Runner<'a> {
    args: &'a Args,
    agent: &'a Path,
    app: &'a Path,
    dir: &'a Path,
    /// The core of `--neighbour`.
    neighbour_core: usize,
    runs: Vec<Run>,
}

impl Runner<'_> {
    /// One run under `policy` (with a loop signal: `rescue+proc` is policy
    /// rescue with `--loop-signal proc`).
    fn one(
        &mut self,
        name: &str,
        policy: &str,
        tick: &str,
        plan: &dyn Fn(Plan) -> Plan,
    ) -> anyhow::Result<()> {
        self.with_flags(name, policy, tick, &[], plan)
    }

    /// [`Runner::one`] with more agent flags; skipped when `--only` leaves
    /// it out.
    fn with_flags(
        &mut self,
        name: &str,
        policy: &str,
        tick: &str,
        flags: &[&str],
        plan: &dyn Fn(Plan) -> Plan,
    ) -> anyhow::Result<()> {
        if self
            .args
            .only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|o| name.contains(o.as_str())))
        {
            return Ok(());
        }
        let (policy, loop_signal) = policy.split_once('+').unwrap_or((policy, "auto"));
        let duration = Duration::from_secs(self.args.duration);
        for &with in self.args.neighbour.arms() {
            let (name, neighbour) = if with {
                let core = self.neighbour_core;
                (format!("{name}, neighbour on CPU {core}"), Some(core))
            } else {
                (name.to_owned(), None)
            };
            let setting = Setting {
                policy,
                loop_signal,
                tick,
                flags,
                workers: 4,
                neighbour,
            };
            let r = measure(
                self.agent, self.app, self.dir, &name, &setting, duration, plan,
            )?;
            report::print_run(&r);
            self.runs.push(r);
        }
        Ok(())
    }
}

impl Args {
    /// The fast class.
    fn fast(&self, plan: Plan) -> Plan {
        plan.get("fast", "/", self.rate)
    }

    /// The fast class and one that blocks the event loop (`/block`).
    fn skewed(&self, plan: Plan) -> Plan {
        let block = format!("/block?ms={}", self.block_ms);
        self.fast(plan).get("block", &block, self.block_rate)
    }
}

/// Every run but the idle one, each against a fresh agent, printed as it
/// ends.
fn measure_all(args: &Args, agent: &Path, app: &Path, dir: &Path) -> anyhow::Result<Vec<Run>> {
    let fast = |plan: Plan| args.fast(plan);
    let skewed = |plan: Plan| args.skewed(plan);
    let neighbour_core = match args.neighbour_core {
        Some(c) => c,
        None => neighbour::last_cpu()?,
    };
    let mut r = Runner {
        args,
        agent,
        app,
        dir,
        neighbour_core,
        runs: Vec::new(),
    };
    println!(
        "skew: {} fast req/s + {} req/s blocking {} ms, new connection each (keepalive runs: over {} connections), {} s per run, 4 workers",
        args.rate,
        args.block_rate,
        args.block_ms,
        keepalive::CONNECTIONS,
        args.duration
    );
    if args.neighbour != neighbour::Mode::Off {
        println!(
            "neighbour: a busy loop (node) pinned to CPU {neighbour_core}, from before each run's warm-up to its end{}",
            if args.neighbour == neighbour::Mode::Both {
                "; each run without, then with it"
            } else {
                ""
            }
        );
    }
    r.one("baseline (no blocking)", "rescue", "2ms", &fast)?;
    r.one("skew, rescue (default)", "rescue", "2ms", &skewed)?;
    // (hash and kernel sample at a coarse tick whatever --tick says.)
    r.one("skew, hash", "hash", "2ms", &skewed)?;
    r.one("skew, kernel", "kernel", "2ms", &skewed)?;
    for tick in &args.ticks {
        r.one(
            &format!("skew, rescue, tick {tick}"),
            "rescue",
            tick,
            &skewed,
        )?;
    }
    // Each kind of block: the exact loop signal, the /proc fallback, and
    // the kernel's hash. ("rescue+proc": policy rescue, --loop-signal proc.)
    for kind in &args.kinds {
        let path = format!("/{kind}?ms={}", args.block_ms);
        let plan = |plan: Plan| fast(plan).get("block", &path, args.block_rate);
        r.one(
            &format!("kind {kind}, rescue"),
            "rescue+kernel",
            "2ms",
            &plan,
        )?;
        r.one(
            &format!("kind {kind}, rescue, /proc signal"),
            "rescue+proc",
            "2ms",
            &plan,
        )?;
        r.one(&format!("kind {kind}, kernel"), "kernel", "2ms", &plan)?;
    }
    let uniform = |plan: Plan| plan.get("fast", "/", args.uniform_rate);
    r.one(
        &format!("uniform {}/s, rescue (default)", args.uniform_rate),
        "rescue",
        "2ms",
        &uniform,
    )?;
    r.one(
        &format!("uniform {}/s, kernel", args.uniform_rate),
        "kernel",
        "2ms",
        &uniform,
    )?;
    keepalive::runs(&mut r)?;
    Ok(r.runs)
}

fn measure(
    agent: &Path,
    app: &Path,
    dir: &Path,
    name: &str,
    setting: &Setting,
    duration: Duration,
    plan: &dyn Fn(Plan) -> Plan,
) -> anyhow::Result<Run> {
    let port = free_port()?;
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let log = |what: &str| dir.join(format!("{}{what}.log", file_name(name)));
    // Started first, so it is already there when the agent starts and
    // through the warm-up, as a busy tenant would be.
    let neighbour = setting
        .neighbour
        .map(|core| neighbour::Neighbour::start(core, &log(".neighbour")))
        .transpose()?;
    let (flags, log) = (setting.agent_flags(), log(""));
    let mut group = start_agent(
        agent,
        app,
        &log,
        (port, Some(admin)),
        setting.workers,
        &flags,
    )?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let warmup = Duration::from_secs(2);
    let p = plan(
        Plan::new(addr, duration)
            .warmup(warmup)
            .timeout(Duration::from_secs(10)),
    );
    let sampler = cpu_over_window(
        [
            Some(group.pid()),
            neighbour.as_ref().map(neighbour::Neighbour::pid),
        ],
        warmup,
        duration,
    );
    let report = loadgen::run(&p)?;
    let [cpu, neighbour_cpu] = sampler.join().unwrap_or([None, None]);
    let neighbour = neighbour
        .map(|n| n.stop(neighbour_cpu, duration))
        .transpose()
        .with_context(|| format!("{name}: the neighbour"))?;
    let cpu = cpu.context("the agent's CPU time could not be read (did it exit?)")?;
    let log = fs::read_to_string(&log).unwrap_or_default();
    let released = keepalive::read_released(admin)
        .inspect_err(|e| eprintln!("{name}: {e:#}"))
        .ok();
    group.stop(Duration::from_secs(15));
    let summaries: Vec<Summary> = report
        .classes
        .iter()
        .map(|c| c.summary(report.measured))
        .collect();
    let fast = summaries
        .iter()
        .find(|s| s.name == "fast")
        .cloned()
        .context("no fast class")?;
    let block = summaries.into_iter().find(|s| s.name == "block");
    let slow_us = u64::try_from(SLOW.as_micros()).expect("a few ms");
    let slow = report
        .class("fast")
        .map_or(0, |c| c.latency.count_between(slow_us, u64::MAX));
    Ok(Run {
        name: name.to_owned(),
        policy: setting.policy.to_owned(),
        tick: setting.tick.to_owned(),
        loop_signal: setting.loop_signal.to_owned(),
        flags: setting.flags.iter().map(|&f| f.to_owned()).collect(),
        connections: p.connections,
        fast,
        block,
        agent_cpu_percent: 100.0 * cpu.as_secs_f64() / duration.as_secs_f64(),
        rescues: (setting.policy == "rescue").then(|| log.matches("worker busy").count() as u64),
        released,
        reopened: report.closed_idle,
        fast_slow: slow,
        neighbour,
    })
}

/// The CPU time of each of `pids` over the measured window only: from
/// `warmup` on, for `window`.
fn cpu_over_window(
    pids: [Option<i32>; 2],
    warmup: Duration,
    window: Duration,
) -> thread::JoinHandle<[Option<Duration>; 2]> {
    thread::spawn(move || {
        let read = || pids.map(|p| p.and_then(cpu_time));
        thread::sleep(warmup);
        let a = read();
        thread::sleep(window);
        let b = read();
        [0, 1].map(|i| b[i].zip(a[i]).map(|(b, a)| b.saturating_sub(a)))
    })
}

fn idle(agent: &Path, app: &Path, dir: &Path, window: Duration) -> anyhow::Result<Idle> {
    let port = free_port()?;
    let log = dir.join("idle.log");
    let mut group = start_agent(agent, app, &log, (port, None), 16, &[])?;
    // Let start-up settle before measuring.
    thread::sleep(Duration::from_secs(3));
    let pid = group.pid();
    let a = cpu_time(pid).context("agent CPU time")?;
    thread::sleep(window);
    let b = cpu_time(pid).context("agent CPU time")?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).context("agent status")?;
    let field = |name: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    let (rss, threads) = (field("VmRSS:")?, field("Threads:")?);
    group.stop(Duration::from_secs(15));
    Ok(Idle {
        workers: 16,
        seconds: window.as_secs(),
        agent_cpu_percent: 100.0 * b.saturating_sub(a).as_secs_f64() / window.as_secs_f64(),
        cpu_resolution_percent: 100.0 / f64::from(clk_tck()) / window.as_secs_f64(),
        agent_rss_kib: rss,
        agent_threads: threads,
    })
}

/// Starts the agent in its own process group, serving `port` and its admin
/// API at `admin` (or none), its output in `log`; returns once every worker
/// is ready.
fn start_agent(
    agent: &Path,
    app: &Path,
    log: &Path,
    (port, admin): (u16, Option<SocketAddr>),
    workers: usize,
    extra: &[&str],
) -> anyhow::Result<Group> {
    let admin = admin.map_or_else(|| "off".to_owned(), |a| a.to_string());
    let _ = fs::remove_file(log);
    let mut cmd = Command::new(agent);
    cmd.arg("run")
        .args([
            "--workers",
            &workers.to_string(),
            "--port",
            &port.to_string(),
        ])
        .args(["--host", "127.0.0.1", "--admin", &admin])
        .args(extra)
        .arg("--")
        .arg("node")
        .arg(app)
        .env_remove("PORT")
        .env("NO_COLOR", "1");
    let mut group = Group::spawn("watt-agent", &mut cmd, log)?;
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if text.matches("worker ready").count() >= workers {
            return Ok(group);
        }
        if group.exited().is_some() || Instant::now() > deadline {
            group.stop(Duration::from_secs(5));
            bail!(
                "the agent did not get {workers} workers ready:\n{}",
                procs::tail(&text, 20)
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// utime + stime of `pid`.
fn cpu_time(pid: i32) -> Option<Duration> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = s[s.rfind(')')? + 2..].split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_nanos(
        ticks * 1_000_000_000 / u64::from(clk_tck()),
    ))
}

/// Clock ticks a second (`utime`/`stime` units; 100 on Linux).
fn clk_tck() -> u32 {
    // SAFETY: sysconf has no preconditions.
    u32::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .unwrap_or(100)
        .max(1)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
