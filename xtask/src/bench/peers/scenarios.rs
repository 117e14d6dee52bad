//! The scenarios, and running one scenario against one arm (a cell).
use std::{
    collections::{BTreeMap, HashSet},
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::arms::{self, App, Arm, Ctx, Running};
use crate::bench::loadgen::{self, ClientStats, Plan, Report, Summary, Sweep, SweepSpec};

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    clap::ValueEnum,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Fast requests at a fixed rate, a new connection each: p50/p99.
    Uniform,
    /// The same over keep-alive connections.
    UniformKa,
    /// Fast requests plus requests that block a worker's event loop.
    Skew,
    /// The same over keep-alive connections.
    SkewKa,
    /// Fast requests while a worker stalls and crashes every second.
    Crash,
    /// Fast requests during a rolling reload.
    Reload,
    /// Rate ramp until p99 passes the bound or a request fails.
    Saturation,
    /// The same over keep-alive connections.
    SaturationKa,
    /// Next.js standalone, fixed rate (if the fixture is built).
    Next,
    /// Next.js standalone, rate ramp.
    NextSaturation,
}

impl Scenario {
    pub const DEFAULT: [Self; 10] = [
        Self::Uniform,
        Self::UniformKa,
        Self::Skew,
        Self::SkewKa,
        Self::Crash,
        Self::Reload,
        Self::Saturation,
        Self::SaturationKa,
        Self::Next,
        Self::NextSaturation,
    ];

    #[must_use]
    pub fn id(self) -> &'static str {
        match self {
            Self::Uniform => "uniform",
            Self::UniformKa => "uniform-ka",
            Self::Skew => "skew",
            Self::SkewKa => "skew-ka",
            Self::Crash => "crash",
            Self::Reload => "reload",
            Self::Saturation => "saturation",
            Self::SaturationKa => "saturation-ka",
            Self::Next => "next",
            Self::NextSaturation => "next-saturation",
        }
    }

    #[must_use]
    pub fn keep_alive(self) -> bool {
        matches!(self, Self::UniformKa | Self::SkewKa | Self::SaturationKa)
    }

    #[must_use]
    pub fn is_next(self) -> bool {
        matches!(self, Self::Next | Self::NextSaturation)
    }

    /// The figure repeated runs are compared by (the report shows the run
    /// with the median one).
    #[must_use]
    pub fn figure(self) -> &'static str {
        match self {
            Self::Uniform | Self::UniformKa | Self::Next => "p50 ms",
            Self::Skew | Self::SkewKa => "fast p99 ms",
            Self::Crash => "lost requests",
            Self::Reload => "failed requests",
            Self::Saturation | Self::SaturationKa | Self::NextSaturation => {
                "max sustainable rate /s"
            }
        }
    }

    /// That figure in `cell`.
    #[must_use]
    pub fn key(self, cell: &Cell) -> Option<f64> {
        let first = cell.classes.first();
        // Latencies only of a class that got answers (otherwise they read 0).
        let answered = |c: &&Summary| c.ok > 0;
        #[allow(clippy::cast_precision_loss)] // request counts
        match self {
            Self::Uniform | Self::UniformKa | Self::Next => {
                first.filter(answered).map(|c| c.p50_ms)
            }
            Self::Skew | Self::SkewKa => cell.class("fast").filter(answered).map(|c| c.p99_ms),
            Self::Crash => cell.crash.as_ref().map(|c| c.lost as f64),
            Self::Reload => first.map(|c| c.failed as f64),
            Self::Saturation | Self::SaturationKa | Self::NextSaturation => {
                cell.sweep.as_ref().and_then(|s| s.max_rate)
            }
        }
    }

    /// Does `arm` take part? The re-steering variant only matters with
    /// keep-alive, where it differs from the plain agent.
    #[must_use]
    pub fn applies(self, arm: Arm) -> bool {
        arm != Arm::AgentResteer || self.keep_alive()
    }
}

/// The knobs of a run (the command line's, resolved).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    pub workers: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub timeout_s: f64,
    /// Rate of the uniform scenarios (requests/s).
    pub rate: f64,
    /// Keep-alive connections of the *-ka scenarios.
    pub ka_connections: usize,
    pub skew_fast_rate: f64,
    pub skew_block_rate: f64,
    pub skew_block_ms: u64,
    pub crash_fast_rate: f64,
    /// A crashing worker first blocks this long (a stall), then exits.
    pub crash_stall_ms: u64,
    pub reload_fast_rate: f64,
    /// When the reload starts, after the warm-up.
    pub reload_at_s: f64,
    pub sweep: SweepSpec,
    pub sweep_step_s: f64,
    pub next_rate: f64,
    pub next_sweep_start: f64,
    pub sweep_start_ka: f64,
    /// Re-steering arm: keep-alive connections close after this many requests.
    pub resteer_requests: u32,
    pub watt_restart_ms: u64,
    pub realtime: bool,
}

impl Settings {
    fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup_s)
    }
    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_s)
    }
    fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_s)
    }
}

/// What a crash cell found out about its failed fast requests.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CrashStats {
    /// Stall-then-crash requests sent (one per second).
    pub crashes: u64,
    /// Fast requests that failed.
    pub failed: u64,
    /// ...of which a worker had accepted (in the app's accept log): they died
    /// with the crashing worker, which no balancer can save.
    pub accepted: u64,
    /// ...of which no worker ever accepted: lost in a dead worker's accept
    /// queue, refused, or lost in a hand-over.
    pub lost: u64,
    pub lost_kinds: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReloadStats {
    pub how: String,
    /// From the reload's start to its end (as the arm reports it).
    pub took_s: f64,
    pub error: Option<String>,
}

/// The outcome of one scenario on one arm.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Cell {
    pub scenario: String,
    pub arm: String,
    pub label: String,
    /// `ok`, `error` or `skipped`.
    pub status: String,
    pub error: Option<String>,
    pub classes: Vec<Summary>,
    pub client: Option<ClientStats>,
    /// Latency (ms) at quantiles of the first class: [[q, ms], ...].
    pub curve: Vec<[f64; 2]>,
    pub crash: Option<CrashStats>,
    pub reload: Option<ReloadStats>,
    pub sweep: Option<Sweep>,
    /// Wall time of the cell, start and stop included.
    pub seconds: f64,
}

impl Cell {
    #[must_use]
    pub fn class(&self, name: &str) -> Option<&Summary> {
        self.classes.iter().find(|c| c.name == name)
    }

    #[must_use]
    pub fn ok(&self) -> bool {
        self.status == "ok"
    }
}

pub const CURVE: [f64; 9] = [0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0];

fn curve(report: &Report) -> Vec<[f64; 2]> {
    report
        .classes
        .first()
        .filter(|c| !c.latency.is_empty())
        .map(|c| CURVE.iter().map(|&q| [q, c.quantile_ms(q)]).collect())
        .unwrap_or_default()
}

/// Everything a cell needs besides the arm.
pub struct CellEnv<'a> {
    pub ctx: &'a Ctx<'a>,
    pub settings: &'a Settings,
    pub test_app: &'a App,
    pub next_app: Option<&'a App>,
    /// Folder of this cell's files.
    pub dir: &'a Path,
    /// Short folder for unix sockets.
    pub sock_dir: &'a Path,
    pub port: u16,
    /// Distinct per cell: picks the client address of the crash scenario.
    pub slot: usize,
}

/// Runs `scenario` on `arm`: start, load, stop. Never fails: errors end up
/// in the cell.
pub fn run_cell(env: &CellEnv<'_>, scenario: Scenario, arm: Arm) -> Cell {
    let started = Instant::now();
    let mut cell = Cell {
        scenario: scenario.id().into(),
        arm: arm.id().into(),
        label: arm.label().into(),
        status: "ok".into(),
        ..Cell::default()
    };
    let app = if scenario.is_next() {
        let Some(a) = env.next_app else {
            cell.status = "skipped".into();
            cell.error =
                Some("no Next.js standalone build (bash tests/fixtures/prepare.sh)".into());
            return cell;
        };
        a
    } else {
        env.test_app
    };
    if let Err(e) = fill(env, scenario, arm, app, &mut cell) {
        cell.status = "error".into();
        cell.error = Some(format!("{e:#}"));
    }
    cell.seconds = started.elapsed().as_secs_f64();
    cell
}

fn fill(
    env: &CellEnv<'_>,
    scenario: Scenario,
    arm: Arm,
    app: &App,
    cell: &mut Cell,
) -> anyhow::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], env.port));
    let accept_dir = env.dir.join("accepts");
    let mut extra = Vec::new();
    if scenario == Scenario::Crash {
        fs::create_dir_all(&accept_dir)?;
        extra.push((
            "TEST_APP_LOG_ACCEPTS".to_owned(),
            accept_dir.to_string_lossy().into_owned(),
        ));
    }
    let running = arms::start(env.ctx, arm, app, env.port, env.dir, env.sock_dir, &extra)
        .with_context(|| format!("starting {}", arm.label()))?;
    let _ = fs::write(env.dir.join("command.txt"), &running.command);
    // Let the workers settle (JIT warm-up happens in the load's warm-up).
    thread::sleep(Duration::from_millis(300));
    let result = load(env, scenario, &running, addr, cell, &accept_dir);
    let alive = running.processes().len();
    running.stop();
    result?;
    if alive == 0 {
        anyhow::bail!("the arm was gone by the end of the load");
    }
    Ok(())
}

fn base_plan(s: &Settings, addr: SocketAddr, keep_alive: bool) -> Plan {
    let p = Plan::new(addr, s.duration())
        .warmup(s.warmup())
        .timeout(s.timeout())
        .realtime(s.realtime);
    if keep_alive {
        p.keep_alive(s.ka_connections)
    } else {
        p
    }
}

fn record(cell: &mut Cell, report: &Report) {
    cell.classes = report.summaries();
    cell.client = Some(report.client());
    cell.curve = curve(report);
}

fn load(
    env: &CellEnv<'_>,
    scenario: Scenario,
    running: &Running,
    addr: SocketAddr,
    cell: &mut Cell,
    accept_dir: &Path,
) -> anyhow::Result<()> {
    let s = env.settings;
    match scenario {
        Scenario::Uniform | Scenario::UniformKa => {
            let plan = base_plan(s, addr, scenario.keep_alive()).get("fast", "/", s.rate);
            record(cell, &loadgen::run(&plan)?);
        }
        Scenario::Next => {
            let plan = base_plan(s, addr, false).get("page", "/", s.next_rate);
            record(cell, &loadgen::run(&plan)?);
        }
        Scenario::Skew | Scenario::SkewKa => {
            let plan = base_plan(s, addr, scenario.keep_alive())
                .get("fast", "/", s.skew_fast_rate)
                .get(
                    "block",
                    &format!("/block?ms={}", s.skew_block_ms),
                    s.skew_block_rate,
                );
            record(cell, &loadgen::run(&plan)?);
        }
        Scenario::Crash => {
            // A worker stalls (its event loop blocked, connections queue on
            // its listener) and then exits: one connection carries both
            // requests, pipelined, so the same worker does both.
            let crash = format!(
                "GET /block?ms={} HTTP/1.1\r\nHost: localhost\r\n\r\nGET /crash HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                s.crash_stall_ms
            );
            let ip = Ipv4Addr::new(
                127,
                77,
                u8::try_from(env.slot / 250).expect("a run has fewer than 250 * 250 cells"),
                u8::try_from(env.slot % 250 + 1).expect("at most 250"),
            );
            let plan = base_plan(s, addr, false)
                .get("fast", "/", s.crash_fast_rate)
                .raw("crash", crash.as_bytes(), 1.0)
                .unique_ports(ip, 20_000..61_000);
            let report = loadgen::run(&plan)?;
            record(cell, &report);
            cell.crash = Some(attribute(&report, accept_dir));
        }
        Scenario::Reload => {
            let plan = base_plan(s, addr, false).get("fast", "/", s.reload_fast_rate);
            let load = loadgen::spawn(plan);
            thread::sleep(s.warmup() + Duration::from_secs_f64(s.reload_at_s));
            let t = Instant::now();
            let outcome = running.reload(env.ctx);
            let took = t.elapsed().as_secs_f64();
            let report = load
                .join()
                .map_err(|_| anyhow::anyhow!("load generator panicked"))??;
            record(cell, &report);
            cell.reload = Some(match outcome {
                Ok(how) => ReloadStats {
                    how,
                    took_s: took,
                    error: None,
                },
                Err(e) => ReloadStats {
                    how: String::new(),
                    took_s: took,
                    error: Some(format!("{e:#}")),
                },
            });
        }
        Scenario::Saturation | Scenario::SaturationKa | Scenario::NextSaturation => {
            let mut spec = s.sweep.clone();
            match scenario {
                Scenario::NextSaturation => spec.start = s.next_sweep_start,
                Scenario::SaturationKa => spec.start = s.sweep_start_ka,
                _ => {}
            }
            // The first step gets the whole warm-up (JIT, Next.js's first
            // renders), later ones half a second.
            let mut first = true;
            let step = Duration::from_secs_f64(s.sweep_step_s);
            let ka = scenario.keep_alive();
            let path = "/";
            let sweep = loadgen::sweep(
                &spec,
                |rate| {
                    let warm = if first {
                        s.warmup().max(Duration::from_millis(500))
                    } else {
                        Duration::from_millis(500)
                    };
                    first = false;
                    let p = Plan::new(addr, step)
                        .warmup(warm)
                        .timeout(s.timeout())
                        .realtime(s.realtime)
                        .get("fast", path, rate);
                    if ka {
                        p.keep_alive(s.ka_connections)
                    } else {
                        p
                    }
                },
                |step| {
                    eprintln!(
                        "    {:>6.0}/s  p50 {:>7.2} ms  p99 {:>8.2} ms  failed {:>5}  client lag p99 {:.2} ms{}",
                        step.rate,
                        step.classes[0].p50_ms,
                        step.classes[0].p99_ms,
                        step.classes[0].failed,
                        step.client.lag_p99_ms,
                        step.reason
                            .as_deref()
                            .map(|r| format!("  <- {r}"))
                            .unwrap_or_default()
                    );
                    // TIME_WAIT and queues settle between steps.
                    thread::sleep(Duration::from_millis(300));
                },
            )?;
            // The table shows the last passing step.
            if let Some(best) = sweep.steps.iter().rev().find(|st| st.passed) {
                cell.classes.clone_from(&best.classes);
                cell.client = Some(best.client.clone());
            }
            cell.sweep = Some(sweep);
        }
    }
    Ok(())
}

/// Splits the crash cell's failed fast requests into those a worker had
/// accepted (the app logs every accepted connection's client port; the
/// client ports are unique within the run) and those no worker accepted.
/// Which worker is not told apart: Watt's workers are threads of one
/// process and share one log. In practice only the crashing worker's fail.
fn attribute(report: &Report, accept_dir: &Path) -> CrashStats {
    let mut accepted_ports = HashSet::new();
    if let Ok(dir) = fs::read_dir(accept_dir) {
        for e in dir.flatten() {
            if let Ok(text) = fs::read_to_string(e.path()) {
                accepted_ports.extend(text.lines().filter_map(|l| l.trim().parse::<u16>().ok()));
            }
        }
    }
    let mut out = CrashStats {
        crashes: report.class("crash").map_or(0, |c| c.sent),
        ..CrashStats::default()
    };
    if let Some(fast) = report.class("fast") {
        out.failed = fast.failed();
        for f in &fast.failures {
            if f.local_port.is_some_and(|p| accepted_ports.contains(&p)) {
                out.accepted += 1;
            } else {
                out.lost += 1;
                *out.lost_kinds.entry(f.kind.key()).or_default() += 1;
            }
        }
        // Failures beyond the kept details (not expected at these rates).
        let kept = fast.failures.len() as u64;
        out.lost += out.failed.saturating_sub(kept);
    }
    out
}
