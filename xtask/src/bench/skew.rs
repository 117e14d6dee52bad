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
//! - idle: 16 workers and no traffic for a minute: the agent's CPU and RSS.
use std::{
    fmt::Write as _,
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::{
    loadgen::{self, Plan, Summary},
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
}

#[derive(Serialize)]
struct Run {
    name: String,
    policy: String,
    tick: String,
    loop_signal: String,
    fast: Summary,
    block: Option<Summary>,
    /// The agent's CPU over the measured window, % of one core.
    agent_cpu_percent: f64,
    rescues: Option<u64>,
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
    let dir = root.join("target/bench-skew");
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
    write(&root, &results)
}

/// Every run but the idle one, each against a fresh agent, printed as it
/// ends.
fn measure_all(args: &Args, agent: &Path, app: &Path, dir: &Path) -> anyhow::Result<Vec<Run>> {
    let duration = Duration::from_secs(args.duration);
    let fast = |plan: Plan| plan.get("fast", "/", args.rate);
    let block_path = format!("/block?ms={}", args.block_ms);
    let skewed = |plan: Plan| fast(plan).get("block", &block_path, args.block_rate);

    let mut runs = Vec::new();
    let mut one =
        |name: &str, policy: &str, tick: &str, plan: &dyn Fn(Plan) -> Plan| -> anyhow::Result<()> {
            if args
                .only
                .as_ref()
                .is_some_and(|o| !o.iter().any(|o| name.contains(o.as_str())))
            {
                return Ok(());
            }
            let (policy, signal) = policy.split_once('+').unwrap_or((policy, "auto"));
            let r = measure(
                agent, app, dir, name, policy, signal, tick, 4, duration, plan,
            )?;
            print_run(&r);
            runs.push(r);
            Ok(())
        };
    println!(
        "skew: {} fast req/s + {} req/s blocking {} ms, new connection each, {} s per run, 4 workers",
        args.rate, args.block_rate, args.block_ms, args.duration
    );
    one("baseline (no blocking)", "rescue", "2ms", &fast)?;
    one("skew, rescue (default)", "rescue", "2ms", &skewed)?;
    // (hash and kernel sample at a coarse tick whatever --tick says.)
    one("skew, hash", "hash", "2ms", &skewed)?;
    one("skew, kernel", "kernel", "2ms", &skewed)?;
    for tick in &args.ticks {
        one(
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
        one(
            &format!("kind {kind}, rescue"),
            "rescue+kernel",
            "2ms",
            &plan,
        )?;
        one(
            &format!("kind {kind}, rescue, /proc signal"),
            "rescue+proc",
            "2ms",
            &plan,
        )?;
        one(&format!("kind {kind}, kernel"), "kernel", "2ms", &plan)?;
    }
    let uniform = |plan: Plan| plan.get("fast", "/", args.uniform_rate);
    one(
        &format!("uniform {}/s, rescue (default)", args.uniform_rate),
        "rescue",
        "2ms",
        &uniform,
    )?;
    one(
        &format!("uniform {}/s, kernel", args.uniform_rate),
        "kernel",
        "2ms",
        &uniform,
    )?;

    Ok(runs)
}

/// One line per run: the fast class's latency and the agent's cost.
fn print_run(r: &Run) {
    println!(
        "{:<28} fast p50 {:>7.3} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  failed {:>3}  agent CPU {:>5.2}%{}",
        r.name,
        r.fast.p50_ms,
        r.fast.p99_ms,
        r.fast.p999_ms,
        r.fast.failed,
        r.agent_cpu_percent,
        r.rescues
            .map(|n| format!("  rescues {n}"))
            .unwrap_or_default()
    );
}

#[expect(
    clippy::too_many_arguments,
    reason = "one caller, which names every setting of the run"
)]
fn measure(
    agent: &Path,
    app: &Path,
    dir: &Path,
    name: &str,
    policy: &str,
    loop_signal: &str,
    tick: &str,
    workers: usize,
    duration: Duration,
    plan: &dyn Fn(Plan) -> Plan,
) -> anyhow::Result<Run> {
    let port = free_port()?;
    let mut group = start_agent(
        agent,
        app,
        dir,
        port,
        workers,
        &[
            "--policy",
            policy,
            "--tick",
            tick,
            "--loop-signal",
            loop_signal,
        ],
    )?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let warmup = Duration::from_secs(2);
    let p = plan(
        Plan::new(addr, duration)
            .warmup(warmup)
            .timeout(Duration::from_secs(10)),
    );
    // The agent's CPU over the measured window only.
    let pid = group.pid();
    let sampler = thread::spawn(move || {
        thread::sleep(warmup);
        let a = cpu_time(pid);
        thread::sleep(duration);
        cpu_time(pid).zip(a).map(|(b, a)| b.saturating_sub(a))
    });
    let report = loadgen::run(&p)?;
    let cpu = sampler
        .join()
        .ok()
        .flatten()
        .context("the agent's CPU time could not be read (did it exit?)")?;
    let log = fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
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
    Ok(Run {
        name: name.to_owned(),
        policy: policy.to_owned(),
        tick: tick.to_owned(),
        loop_signal: loop_signal.to_owned(),
        fast,
        block,
        agent_cpu_percent: 100.0 * cpu.as_secs_f64() / duration.as_secs_f64(),
        rescues: (policy == "rescue").then(|| log.matches("worker busy").count() as u64),
    })
}

fn idle(agent: &Path, app: &Path, dir: &Path, window: Duration) -> anyhow::Result<Idle> {
    let port = free_port()?;
    let mut group = start_agent(agent, app, dir, port, 16, &[])?;
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

/// Starts the agent in its own process group; returns once every worker is
/// ready.
fn start_agent(
    agent: &Path,
    app: &Path,
    dir: &Path,
    port: u16,
    workers: usize,
    extra: &[&str],
) -> anyhow::Result<Group> {
    let log = dir.join("agent.log");
    let _ = fs::remove_file(&log);
    let mut cmd = Command::new(agent);
    cmd.arg("run")
        .args([
            "--workers",
            &workers.to_string(),
            "--port",
            &port.to_string(),
        ])
        .args(["--host", "127.0.0.1", "--admin", "off"])
        .args(extra)
        .arg("--")
        .arg("node")
        .arg(app)
        .env_remove("PORT")
        .env("NO_COLOR", "1");
    let mut group = Group::spawn("watt-agent", &mut cmd, &log)?;
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let text = fs::read_to_string(&log).unwrap_or_default();
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

fn write(root: &Path, r: &Results) -> anyhow::Result<()> {
    let dir = root.join("bench/results");
    fs::create_dir_all(&dir)?;
    let day = &r.date[..10];
    let json: PathBuf = dir.join(format!("skew-{day}.json"));
    fs::write(&json, serde_json::to_string_pretty(r)?)?;
    let mut md = format!(
        "# Skew benchmark, {}\n\nMachine: {}. watt-agent {}. 4 workers of tests/fixtures/apps/test-app.js on Node {}. \
         Open-loop load, new connection per request, latency from the scheduled start.\n\n\
         | run | policy | tick | fast p50 | fast p99 | fast p99.9 | failed | agent CPU |\n|---|---|---|---|---|---|---|---|\n",
        r.date,
        r.machine
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        r.commit,
        r.node
    );
    for run in &r.runs {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {} | {:.2}% |",
            run.name,
            run.policy,
            run.tick,
            run.fast.p50_ms,
            run.fast.p99_ms,
            run.fast.p999_ms,
            run.fast.failed + run.block.as_ref().map_or(0, |b| b.failed),
            run.agent_cpu_percent
        );
    }
    if let Some(i) = &r.idle {
        let _ = writeln!(
            md,
            "\nIdle: {} workers, no traffic for {} s: agent CPU {:.3}% of one core (resolution {:.3}%), RSS {} KiB, {} threads.",
            i.workers,
            i.seconds,
            i.agent_cpu_percent,
            i.cpu_resolution_percent,
            i.agent_rss_kib,
            i.agent_threads
        );
    }
    fs::write(dir.join(format!("skew-{day}.md")), &md)?;
    fs::write(dir.join("skew-latest.md"), &md)?;
    println!("\n{md}\nwritten: {}", json.display());
    Ok(())
}
