//! `cargo xtask bench peers`: watt-agent side by side with what users compare
//! it with (Platformatic Watt, PM2 cluster mode, Node's cluster module, plain
//! `SO_REUSEPORT`), on the same app, the same Node 22 and the same open-loop
//! load, with the clients straight on each arm or behind a front (a pool of
//! kept-alive client connections, or a real nginx reverse proxy). Writes bench/results/peers-<date>.{json,md,svg}, latest.{md,svg}
//! and the latest table in bench/README.md.
//!
//! Bounded: every load has a fixed schedule and a deadline, every arm a
//! start timeout, every command a time limit. Traffic goes to 127.0.0.1
//! only. Every process started is killed by pid at the end of its cell, on
//! panic and on Ctrl-C (procs.rs).
mod args;
mod arms;
mod chart;
pub(crate) mod install;
mod nginx;
mod plan;
pub(crate) mod procs;
mod report;
mod scenarios;

use std::{
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    time::{Instant, SystemTime},
};

use anyhow::{Context as _, bail};
pub use args::PeersArgs;
use arms::{App, Arm, Ctx};
use scenarios::{Cell, CellEnv, Front, Scenario, Settings};

use crate::util;

/// `20261127-085612` (a file-name stamp) and `2026-11-27T08:56:12Z`.
pub(crate) fn stamp_and_date(now: SystemTime) -> (String, String) {
    let date = humantime::format_rfc3339_seconds(now).to_string();
    let stamp = date
        .trim_end_matches('Z')
        .replace(['-', ':'], "")
        .replace('T', "-");
    (stamp, date)
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("::", port)).is_ok()
}

/// `cargo xtask` runs a debug build, whose load generator is several times
/// slower: a benchmark re-runs itself from a release build of xtask (set
/// `WATT_BENCH_DEBUG=1` to stay in the debug build).
pub fn reexec_release() -> anyhow::Result<()> {
    if !cfg!(debug_assertions) || std::env::var_os("WATT_BENCH_DEBUG").is_some() {
        return Ok(());
    }
    let root = util::root();
    eprintln!("bench: building xtask in release mode for an optimized load generator");
    util::run(
        std::process::Command::new(env!("CARGO"))
            .current_dir(&root)
            .args(["build", "--quiet", "--release", "-p", "xtask"]),
    )?;
    let bin = util::target_dir().join("release/xtask");
    let err = std::os::unix::process::CommandExt::exec(
        std::process::Command::new(&bin).args(std::env::args_os().skip(1)),
    );
    Err(anyhow::anyhow!("exec {}: {err}", bin.display()))
}

/// `--render`: the report and chart again from a saved results JSON.
fn render(root: &Path, json: &Path) -> anyhow::Result<()> {
    let text = fs::read_to_string(json).with_context(|| format!("read {}", json.display()))?;
    let mut results: report::Results =
        serde_json::from_str(&text).context("parse the results JSON")?;
    results.targets = report::targets(&results);
    let stamp = json
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.strip_prefix("peers-"))
        .context("expected bench/results/peers-<stamp>.json")?
        .to_owned();
    let complete = Scenario::DEFAULT
        .iter()
        .all(|s| results.cells.iter().any(|c| c.scenario == s.id()))
        && Front::ALL
            .iter()
            .all(|f| results.cells.iter().any(|c| c.front == f.id()))
        && Arm::DEFAULT
            .iter()
            .all(|a| results.cells.iter().any(|c| c.arm == a.id()));
    let svg = chart::svg(&results)?;
    for p in report::write(root, &results, &stamp, &svg, complete)? {
        eprintln!("bench peers: wrote {}", p.display());
    }
    Ok(())
}

pub fn run(args: &PeersArgs) -> anyhow::Result<()> {
    if let Some(json) = &args.render {
        return render(&util::root(), json);
    }
    reexec_release()?;
    // Before any other thread exists: signals go to the cleanup thread.
    procs::install_cleanup();
    let started = Instant::now();
    let root = util::root();
    let (scenarios, fronts, arms) = selection(args)?;
    let settings = args.settings();
    let plan = plan::plan(&scenarios, &fronts, &arms, args.repeats);

    let agent = install::agent(
        &root,
        args.agent_bin.as_deref(),
        !args.no_build && args.agent_bin.is_none(),
    )?;
    let peers = install::peers(&root)?;
    let mut versions = peers.versions.clone();
    versions.insert("watt-agent".into(), install::git_rev(&root));
    let nginx = if plan.iter().any(|p| p.1 == Front::Nginx) {
        let (bin, version) = install::nginx(&root)?;
        versions.insert("nginx".into(), version);
        Some(bin)
    } else {
        None
    };
    let ctx = Ctx {
        root: &root,
        peers: &peers,
        agent: &agent,
        workers: args.workers,
        resteer_requests: settings.resteer_requests,
        watt_restart_ms: settings.watt_restart_ms,
    };

    let (stamp, date) = stamp_and_date(SystemTime::now());
    let cache = root.join("bench/cache");
    let run_dir = cache.join("runs").join(&stamp);
    fs::create_dir_all(&run_dir)?;

    eprintln!(
        "bench peers: {} cells ({} scenarios x {} fronts x {} arms, where they apply, x {} runs), {} workers each; logs in {}",
        plan.len(),
        scenarios.len(),
        fronts.len(),
        arms.len(),
        args.repeats,
        args.workers,
        run_dir.display()
    );
    let runs = run_plan(
        &ctx,
        &settings,
        &plan,
        &run_dir,
        args.port,
        nginx.as_deref(),
    )?;
    let (cells, repeats) = plan::medians(&plan, runs, args.repeats);

    let mut results = report::Results {
        date,
        machine: install::machine(),
        versions,
        settings,
        cells,
        repeats,
        targets: Vec::new(),
        seconds: started.elapsed().as_secs_f64(),
    };
    results.targets = report::targets(&results);
    save(args, &root, &results, &stamp, &run_dir)?;
    prune_runs(&cache.join("runs"), 5);
    let _ = fs::remove_dir_all(cache.join("s"));
    Ok(())
}

/// The scenarios, fronts and arms asked for (all by default), after
/// checking the arguments that bound a run.
fn selection(args: &PeersArgs) -> anyhow::Result<(Vec<Scenario>, Vec<Front>, Vec<Arm>)> {
    let scenarios: Vec<Scenario> = if args.scenarios.is_empty() {
        Scenario::DEFAULT.to_vec()
    } else {
        args.scenarios.clone()
    };
    let fronts: Vec<Front> = if args.fronts.is_empty() {
        Front::ALL.to_vec()
    } else {
        args.fronts.clone()
    };
    if !(1..=1000).contains(&args.front_connections) {
        bail!("--front-connections must be within 1..=1000");
    }
    if !(args.front_crash_rate > 0.0 && args.front_crash_rate <= 10.0) {
        bail!("--front-crash-rate must be within (0, 10] per second");
    }
    let rate_ok = |r: f64| r > 0.0 && r <= 10_000.0;
    if !(rate_ok(args.next_fast_rate) && rate_ok(args.next_sat_rate)) {
        bail!("--next-fast-rate and --next-sat-rate must be within (0, 10000] per second");
    }
    if !(rate_ok(args.next_block_rate) && (1..=10_000).contains(&args.next_block_ms)) {
        bail!(
            "--next-block-rate must be within (0, 10000] per second and --next-block-ms within 1..=10000"
        );
    }
    let arms: Vec<Arm> = if args.arms.is_empty() {
        Arm::DEFAULT.to_vec()
    } else {
        args.arms.clone()
    };
    if !(1..=20).contains(&args.repeats) {
        bail!("--repeats must be within 1..=20");
    }
    if args.workers == 0 || args.workers > 64 {
        bail!("--workers must be within 1..=64");
    }
    if !(args.duration > 0.0 && args.duration <= 600.0 && (0.0..=60.0).contains(&args.warmup)) {
        bail!("--duration must be within (0, 600] s and --warmup within [0, 60] s");
    }
    if arms.iter().any(|a| a.is_agent()) && !util::is_root() {
        bail!(
            "the watt-agent arms need root (the agent loads an eBPF program); run as root or pick --arms without agent*"
        );
    }
    Ok((scenarios, fronts, arms))
}

/// The first port from `port` on that is free, and the one after.
fn next_free(mut port: u16) -> anyhow::Result<u16> {
    for _ in 0..1000 {
        if port_free(port) {
            return Ok(port);
        }
        port = port.checked_add(1).context("no free port")?;
    }
    bail!("no free port")
}

/// Runs every cell of the plan in order, each on the next free port from
/// `port`, with its logs in a folder of `run_dir`.
fn run_plan(
    ctx: &Ctx<'_>,
    settings: &Settings,
    plan: &[plan::Slot],
    run_dir: &Path,
    mut port: u16,
    nginx: Option<&Path>,
) -> anyhow::Result<Vec<(plan::Slot, Cell)>> {
    let cache = ctx.root.join("bench/cache");
    let test_app = App::test_app(ctx.root);
    let next_app = App::nextjs(ctx.root);
    let mut cells = Vec::new();
    for (slot, &(scn, front, arm)) in plan.iter().enumerate() {
        port = next_free(port)?;
        // nginx listens on the next free port after the arm's.
        let front_port = if front == Front::Nginx {
            next_free(port.checked_add(1).context("no free port")?)?
        } else {
            port
        };
        let dir = run_dir.join(format!(
            "{slot:02}-{}-{}-{}",
            scn.id(),
            front.id(),
            arm.id()
        ));
        let sock_dir = cache.join("s").join(format!("{slot}"));
        fs::create_dir_all(&dir)?;
        fs::create_dir_all(&sock_dir)?;
        eprintln!(
            "[{}/{}] {} / {} / {} on port {port}{}",
            slot + 1,
            plan.len(),
            scn.id(),
            front.id(),
            arm.label(),
            if front == Front::Nginx {
                format!(", nginx on {front_port}")
            } else {
                String::new()
            }
        );
        let env = CellEnv {
            ctx,
            settings,
            test_app: &test_app,
            next_app: next_app.as_ref(),
            dir: &dir,
            sock_dir: &sock_dir,
            port,
            slot,
            front,
            front_port,
            nginx,
        };
        let cell = scenarios::run_cell(&env, scn, arm);
        let _ = fs::remove_dir_all(&sock_dir);
        print_cell(&cell);
        cells.push(((scn, front, arm), cell));
        port = front_port.wrapping_add(1).max(1024);
    }
    Ok(cells)
}

/// One line per finished cell on stderr: its key figures, or why it failed.
fn print_cell(cell: &Cell) {
    if let Some(c) = cell
        .crash
        .as_ref()
        .filter(|_| cell.ok() && cell.front != Front::Direct.id())
    {
        let n = |v: Option<u64>| v.map_or_else(|| "n/a".into(), |v| v.to_string());
        eprintln!(
            "      crash: {} fast failed, {} worker crashes, {} fast in flight on them, {} refused",
            c.failed,
            n(c.worker_crashes),
            n(c.in_flight),
            c.refused
        );
    }
    match (&cell.status[..], cell.classes.first()) {
        ("ok", Some(c)) => eprintln!(
            "      {}: ok/s {:.0}, failed {}, p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms; client lag p99 {:.2} ms ({:.0} s){}",
            c.name,
            c.throughput,
            c.failed,
            c.p50_ms,
            c.p99_ms,
            c.max_ms,
            cell.client.as_ref().map_or(0.0, |x| x.lag_p99_ms),
            cell.seconds,
            cell.sweep
                .as_ref()
                .map(|s| format!("; max sustainable {:.0}/s", s.max_rate.unwrap_or(0.0)))
                .unwrap_or_default()
        ),
        _ => eprintln!(
            "      {}: {}",
            cell.status,
            cell.error
                .as_deref()
                .unwrap_or("")
                .lines()
                .take(6)
                .collect::<Vec<_>>()
                .join("\n        ")
        ),
    }
}

/// Prints the report and writes it, the chart and the JSON: under
/// bench/results, or only into the run's log folder with `--no-save`.
fn save(
    args: &PeersArgs,
    root: &Path,
    results: &report::Results,
    stamp: &str,
    run_dir: &Path,
) -> anyhow::Result<()> {
    let svg = chart::svg(results)?;
    let md = report::markdown(results, "latest.svg");
    println!("{md}");
    if args.no_save {
        let json = run_dir.join("results.json");
        fs::write(&json, serde_json::to_string_pretty(results)?)?;
        fs::write(run_dir.join("results.svg"), &svg)?;
        eprintln!(
            "bench peers: not saved under bench/results (--no-save); see {}",
            json.display()
        );
        return Ok(());
    }
    // Only a complete run replaces latest.* and the README's table.
    let complete = args.scenarios.is_empty() && args.arms.is_empty() && args.fronts.is_empty();
    for p in report::write(root, results, stamp, &svg, complete)? {
        eprintln!("bench peers: wrote {}", p.display());
    }
    if !complete {
        eprintln!(
            "bench peers: a subset of scenarios, fronts or arms: latest.* and bench/README.md left as they were"
        );
    }
    Ok(())
}

/// Keeps the newest `keep` run folders (logs) in bench/cache/runs.
fn prune_runs(dir: &Path, keep: usize) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut runs: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    runs.sort();
    let n = runs.len().saturating_sub(keep);
    for p in &runs[..n] {
        let _ = fs::remove_dir_all(p);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn stamps_and_dates() {
        let at = |secs| super::stamp_and_date(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(
            at(1_795_762_285),
            (
                "20261127-065125".to_owned(),
                "2026-11-27T06:51:25Z".to_owned()
            )
        );
        assert_eq!(at(951_782_400).1, "2000-02-29T00:00:00Z");
    }
}
