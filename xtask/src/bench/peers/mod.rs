//! `cargo xtask bench peers`: watt-agent side by side with what users compare
//! it with (Platformatic Watt, PM2 cluster mode, Node's cluster module, plain
//! `SO_REUSEPORT`), on the same app, the same Node 22 and the same open-loop
//! load. Writes bench/results/peers-<date>.{json,md,svg}, latest.{md,svg}
//! and the latest table in bench/README.md.
//!
//! Bounded: every load has a fixed schedule and a deadline, every arm a
//! start timeout, every command a time limit. Traffic goes to 127.0.0.1
//! only. Every process started is killed by pid at the end of its cell, on
//! panic and on Ctrl-C (procs.rs).
mod arms;
mod chart;
pub(crate) mod install;
pub(crate) mod procs;
mod report;
mod scenarios;

use std::{
    fs,
    net::TcpListener,
    path::PathBuf,
    time::{Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use arms::{App, Arm, Ctx};
use scenarios::{CellEnv, Scenario, Settings};

use crate::{bench::loadgen::SweepSpec, util};

#[derive(clap::Args, Clone, Debug)]
pub struct PeersArgs {
    /// Scenarios to run, comma-separated [default: all]
    #[arg(long, value_delimiter = ',', value_enum)]
    pub scenarios: Vec<Scenario>,
    /// Arms to run, comma-separated [default: all]
    #[arg(long, value_delimiter = ',', value_enum)]
    pub arms: Vec<Arm>,
    /// Workers per arm.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Measured seconds per scenario and arm (fixed-rate scenarios).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Warm-up seconds before each measured window (not counted).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Rate of the uniform scenarios (requests/s).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Keep-alive connections in the *-ka scenarios.
    #[arg(long, default_value_t = 32)]
    pub ka_connections: usize,
    /// Fast-request rate of the skew, crash and reload scenarios.
    #[arg(long, default_value_t = 300.0)]
    pub fast_rate: f64,
    /// First rate of the saturation sweeps (requests/s).
    #[arg(long, default_value_t = 1000.0)]
    pub sweep_start: f64,
    /// First rate of the keep-alive saturation sweep (requests/s).
    #[arg(long, default_value_t = 4000.0)]
    pub sweep_start_ka: f64,
    /// Factor between sweep steps.
    #[arg(long, default_value_t = 1.25)]
    pub sweep_factor: f64,
    /// At most this many sweep steps.
    #[arg(long, default_value_t = 14)]
    pub sweep_steps: usize,
    /// Measured seconds per sweep step (plus 0.5 s warm-up).
    #[arg(long, default_value_t = 2.0)]
    pub sweep_step: f64,
    /// A sweep step fails when p99 passes this (ms).
    #[arg(long, default_value_t = 50.0)]
    pub p99_bound: f64,
    /// Runs of every cell, round after round with the arms in a rotated
    /// order; the report shows each cell's median run and every run's figure.
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// First port; each cell takes the next free one.
    #[arg(long, default_value_t = 24300)]
    pub port: u16,
    /// Use this agent binary instead of building one.
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// Do not build the agent; use target/release/watt-agent as it is.
    #[arg(long)]
    pub no_build: bool,
    /// Run the load generator as an ordinary thread. By default it runs with
    /// `SCHED_FIFO` priority 1 (when allowed), so other work on the machine
    /// does not delay its schedule; it sleeps between requests.
    #[arg(long)]
    pub no_realtime: bool,
    /// Print the results but write nothing under bench/results.
    #[arg(long)]
    pub no_save: bool,
    /// Run nothing: rewrite the report, chart (and, for a complete run, the
    /// latest files) from a results JSON this command wrote.
    #[arg(long, value_name = "JSON")]
    pub render: Option<PathBuf>,
}

impl PeersArgs {
    fn settings(&self) -> Settings {
        Settings {
            workers: self.workers,
            warmup_s: self.warmup,
            duration_s: self.duration,
            timeout_s: 5.0,
            rate: self.rate,
            ka_connections: self.ka_connections,
            skew_fast_rate: self.fast_rate,
            skew_block_rate: 8.0,
            skew_block_ms: 100,
            crash_fast_rate: self.fast_rate,
            crash_stall_ms: 100,
            reload_fast_rate: self.fast_rate,
            reload_at_s: 1.0,
            sweep: SweepSpec {
                start: self.sweep_start,
                factor: self.sweep_factor,
                max_steps: self.sweep_steps,
                max_rate: 100_000.0,
                p99_bound_ms: self.p99_bound,
                max_error_ratio: 0.0,
                // Latency counts from the schedule, so the client's own
                // lateness is inside p99 already; it only ends a step by
                // itself when it alone passes the bound.
                max_client_lag_ms: self.p99_bound,
                retries: 1,
            },
            sweep_step_s: self.sweep_step,
            next_rate: 100.0,
            next_sweep_start: 50.0,
            sweep_start_ka: self.sweep_start_ka,
            resteer_requests: 100,
            watt_restart_ms: 100,
            realtime: !self.no_realtime,
        }
    }
}

/// Every (scenario, arm) cell `repeats` times: round after round, each
/// round with the arms rotated by one, so that order effects (the first
/// cell on a cold machine) do not always favour the same arm.
fn plan(scenarios: &[Scenario], arms: &[Arm], repeats: usize) -> Vec<(Scenario, Arm)> {
    let mut out = Vec::new();
    for round in 0..repeats {
        let mut order = arms.to_vec();
        order.rotate_left(round % arms.len().max(1));
        for &scn in scenarios {
            out.extend(order.iter().filter(|&&a| scn.applies(a)).map(|&a| (scn, a)));
        }
    }
    out
}

/// One cell per (scenario, arm), in the first round's order: the run with
/// the median key figure (the lower middle of an even count); and, when
/// there was more than one run, every run's figure.
fn medians(
    plan: &[(Scenario, Arm)],
    mut runs: Vec<(Scenario, Arm, scenarios::Cell)>,
    repeats: usize,
) -> (Vec<scenarios::Cell>, Vec<report::Repeat>) {
    let per_round = plan.len() / repeats.max(1);
    let mut cells = Vec::new();
    let mut spread = Vec::new();
    for &(scn, arm) in &plan[..per_round] {
        let mut mine: Vec<scenarios::Cell> = Vec::new();
        let mut rest = Vec::new();
        for (s, a, c) in runs {
            if (s, a) == (scn, arm) {
                mine.push(c);
            } else {
                rest.push((s, a, c));
            }
        }
        runs = rest;
        let values: Vec<Option<f64>> = mine
            .iter()
            .map(|c| if c.ok() { scn.key(c) } else { None })
            .collect();
        if repeats > 1 {
            spread.push(report::Repeat {
                scenario: scn.id().into(),
                label: arm.label().into(),
                figure: scn.figure().into(),
                values: values.clone(),
            });
        }
        let mut ranked: Vec<(f64, usize)> = values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (v, i)))
            .collect();
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
        let pick = ranked
            .get(ranked.len().saturating_sub(1) / 2)
            .map_or(0, |&(_, i)| i);
        if pick < mine.len() {
            cells.push(mine.swap_remove(pick));
        }
    }
    (cells, spread)
}

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
    let bin = root.join("target/release/xtask");
    let err = std::os::unix::process::CommandExt::exec(
        std::process::Command::new(&bin).args(std::env::args_os().skip(1)),
    );
    Err(anyhow::anyhow!("exec {}: {err}", bin.display()))
}

/// `--render`: the report and chart again from a saved results JSON.
fn render(root: &std::path::Path, json: &std::path::Path) -> anyhow::Result<()> {
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
        && Arm::ALL
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
    let scenarios: Vec<Scenario> = if args.scenarios.is_empty() {
        Scenario::DEFAULT.to_vec()
    } else {
        args.scenarios.clone()
    };
    let arms: Vec<Arm> = if args.arms.is_empty() {
        Arm::ALL.to_vec()
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
    let settings = args.settings();

    let agent = install::agent(
        &root,
        args.agent_bin.as_deref(),
        !args.no_build && args.agent_bin.is_none(),
    )?;
    let peers = install::peers(&root)?;
    let mut versions = peers.versions.clone();
    versions.insert("watt-agent".into(), install::git_rev(&root));
    let ctx = Ctx {
        root: &root,
        peers: &peers,
        agent: &agent,
        workers: args.workers,
        resteer_requests: settings.resteer_requests,
        watt_restart_ms: settings.watt_restart_ms,
    };
    let test_app = App::test_app(&root);
    let next_app = App::nextjs(&root);

    let (stamp, date) = stamp_and_date(SystemTime::now());
    let cache = root.join("bench/cache");
    let run_dir = cache.join("runs").join(&stamp);
    fs::create_dir_all(&run_dir)?;

    let plan = plan(&scenarios, &arms, args.repeats);
    eprintln!(
        "bench peers: {} cells ({} scenarios x {} arms x {} runs), {} workers each; logs in {}",
        plan.len(),
        scenarios.len(),
        arms.len(),
        args.repeats,
        args.workers,
        run_dir.display()
    );
    let mut cells = Vec::new();
    let mut port = args.port;
    for (slot, &(scn, arm)) in plan.iter().enumerate() {
        let mut tries = 0;
        while !port_free(port) {
            port = port
                .checked_add(1)
                .filter(|_| tries < 1000)
                .ok_or_else(|| anyhow::anyhow!("no free port"))?;
            tries += 1;
        }
        let dir = run_dir.join(format!("{slot:02}-{}-{}", scn.id(), arm.id()));
        let sock_dir = cache.join("s").join(format!("{slot}"));
        fs::create_dir_all(&dir)?;
        fs::create_dir_all(&sock_dir)?;
        eprintln!(
            "[{}/{}] {} / {} on port {port}",
            slot + 1,
            plan.len(),
            scn.id(),
            arm.label()
        );
        let env = CellEnv {
            ctx: &ctx,
            settings: &settings,
            test_app: &test_app,
            next_app: next_app.as_ref(),
            dir: &dir,
            sock_dir: &sock_dir,
            port,
            slot,
        };
        let cell = scenarios::run_cell(&env, scn, arm);
        let _ = fs::remove_dir_all(&sock_dir);
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
        cells.push((scn, arm, cell));
        port = port.wrapping_add(1).max(1024);
    }
    let (cells, repeats) = medians(&plan, cells, args.repeats);

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
    let svg = chart::svg(&results)?;
    let md = report::markdown(&results, "latest.svg");
    println!("{md}");
    if args.no_save {
        let json = run_dir.join("results.json");
        fs::write(&json, serde_json::to_string_pretty(&results)?)?;
        fs::write(run_dir.join("results.svg"), &svg)?;
        eprintln!(
            "bench peers: not saved under bench/results (--no-save); see {}",
            json.display()
        );
    } else {
        // Only a complete run replaces latest.* and the README's table.
        let complete = args.scenarios.is_empty() && args.arms.is_empty();
        for p in report::write(&root, &results, &stamp, &svg, complete)? {
            eprintln!("bench peers: wrote {}", p.display());
        }
        if !complete {
            eprintln!(
                "bench peers: a subset of scenarios or arms: latest.* and bench/README.md left as they were"
            );
        }
    }
    prune_runs(&cache.join("runs"), 5);
    let _ = fs::remove_dir_all(cache.join("s"));
    Ok(())
}

/// Keeps the newest `keep` run folders (logs) in bench/cache/runs.
fn prune_runs(dir: &std::path::Path, keep: usize) {
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
    fn repeats_rotate_the_arms_and_report_the_median_run() {
        use super::{Arm, Scenario, scenarios::Cell};
        let arms = [Arm::Agent, Arm::Reuseport];
        let plan = super::plan(&[Scenario::Crash], &arms, 3);
        assert_eq!(
            plan.iter().map(|p| p.1).collect::<Vec<_>>(),
            [
                Arm::Agent,
                Arm::Reuseport,
                Arm::Reuseport,
                Arm::Agent,
                Arm::Agent,
                Arm::Reuseport
            ]
        );
        let cell = |arm: Arm, lost: u64, ok: bool| Cell {
            scenario: "crash".into(),
            arm: arm.id().into(),
            label: arm.label().into(),
            status: if ok { "ok" } else { "error" }.into(),
            crash: Some(super::scenarios::CrashStats {
                lost,
                ..Default::default()
            }),
            ..Cell::default()
        };
        let runs = vec![
            (Scenario::Crash, Arm::Agent, cell(Arm::Agent, 5, true)),
            (
                Scenario::Crash,
                Arm::Reuseport,
                cell(Arm::Reuseport, 80, true),
            ),
            (
                Scenario::Crash,
                Arm::Reuseport,
                cell(Arm::Reuseport, 0, false),
            ),
            (Scenario::Crash, Arm::Agent, cell(Arm::Agent, 0, true)),
            (Scenario::Crash, Arm::Agent, cell(Arm::Agent, 1, true)),
            (
                Scenario::Crash,
                Arm::Reuseport,
                cell(Arm::Reuseport, 90, true),
            ),
        ];
        let (cells, repeats) = super::medians(&plan, runs, 3);
        let lost: Vec<(String, u64)> = cells
            .iter()
            .map(|c| (c.arm.clone(), c.crash.as_ref().unwrap().lost))
            .collect();
        // Agent: 0, 1, 5 -> 1. reusePort: 80, 90 (one run failed) -> 80.
        assert_eq!(
            lost,
            [("agent".to_owned(), 1), ("reuseport".to_owned(), 80)]
        );
        assert_eq!(repeats[1].values, [Some(80.0), None, Some(90.0)]);
        assert_eq!(repeats[0].figure, "lost requests");
    }

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
