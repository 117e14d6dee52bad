//! Running one scenario against one arm: start the arm, load it, stop it,
//! and record what the load measured.
use std::{
    collections::HashSet,
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;

use super::{
    front::Front,
    record::{CURVE, Cell, CrashStats, ReloadStats},
    scenario::{Scenario, Settings},
};
use crate::bench::{
    loadgen::{self, Plan, Report},
    peers::{
        arms::{self, App, Arm, Ctx, Running},
        nginx::{Nginx, Seen},
    },
};

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
    /// How the clients reach the arm.
    pub front: Front,
    /// Where the clients connect: nginx's port for the nginx front, else
    /// `port`.
    pub front_port: u16,
    /// The nginx binary (when a cell of the run goes through nginx).
    pub nginx: Option<&'a Path>,
}

/// Runs `scenario` on `arm`: start, load, stop. Never fails: errors end up
/// in the cell.
pub fn run_cell(env: &CellEnv<'_>, scenario: Scenario, arm: Arm) -> Cell {
    let started = Instant::now();
    let mut cell = Cell {
        scenario: scenario.id().into(),
        front: env.front.id().into(),
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
    let addr = SocketAddr::from(([127, 0, 0, 1], env.front_port));
    let accept_dir = env.dir.join("accepts");
    let inflight_dir = env.dir.join("inflight");
    let mut extra = Vec::new();
    if scenario == Scenario::Crash && env.front == Front::Direct {
        fs::create_dir_all(&accept_dir)?;
        extra.push((
            "TEST_APP_LOG_ACCEPTS".to_owned(),
            accept_dir.to_string_lossy().into_owned(),
        ));
    } else if scenario == Scenario::Crash {
        // Node cluster, PM2 and reusePort workers record what they had in
        // flight when they crashed (bench/app/graceful.js); the agent's
        // shim reports it to the agent, which logs it.
        fs::create_dir_all(&inflight_dir)?;
        extra.push((
            "BENCH_INFLIGHT_LOG".to_owned(),
            inflight_dir.to_string_lossy().into_owned(),
        ));
    }
    let running = arms::start(env.ctx, arm, app, env.port, env.dir, env.sock_dir, &extra)
        .with_context(|| format!("starting {}", arm.label()))?;
    let _ = fs::write(env.dir.join("command.txt"), &running.command);
    let nginx = if env.front == Front::Nginx {
        let bin = env.nginx.context("nginx is not installed")?;
        Some(
            Nginx::start(bin, env.front_port, env.port, &env.dir.join("nginx"))
                .context("starting nginx in front of the arm")?,
        )
    } else {
        None
    };
    // Let the workers settle (JIT warm-up happens in the load's warm-up).
    thread::sleep(Duration::from_millis(300));
    let started = SystemTime::now();
    let result = load(env, scenario, &running, addr, cell, &accept_dir);
    let alive = running.processes().len();
    let log = running.log.clone();
    if let Some(n) = nginx {
        cell.nginx = Some(n.stop());
    }
    running.stop();
    result?;
    if alive == 0 {
        anyhow::bail!("the arm was gone by the end of the load");
    }
    if scenario == Scenario::Crash && env.front != Front::Direct {
        let s = env.settings;
        let from = started + s.warmup();
        let window = (from, from + s.duration() + s.timeout());
        let accounts = match arm {
            Arm::Agent
            | Arm::AgentKernel
            | Arm::AgentResteer
            | Arm::AgentEqual
            | Arm::AgentNoQuarantine => Some(super::crashes::agent(&log, window)),
            Arm::Cluster | Arm::Pm2 | Arm::Reuseport => {
                Some(super::crashes::preload(&inflight_dir, window))
            }
            Arm::Watt => None,
        };
        if let Some(c) = cell.crash.as_mut() {
            c.worker_crashes = accounts.map(|a| a.crashes);
            c.in_flight = accounts.map(|a| a.in_flight);
            c.refused += cell.nginx.as_ref().map_or(0, Seen::refused);
        }
    }
    Ok(())
}

/// A plan of the settings' bounds, on new connections, the scenario's own
/// keep-alive (`*-ka`), or the front's kept-alive client connections.
fn base_plan(env: &CellEnv<'_>, addr: SocketAddr, scenario: Scenario) -> Plan {
    let s = env.settings;
    let p = Plan::new(addr, s.duration())
        .warmup(s.warmup())
        .timeout(s.timeout())
        .realtime(s.realtime);
    if env.front != Front::Direct {
        p.keep_alive(s.front_connections)
    } else if scenario.keep_alive() {
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
            let plan = base_plan(env, addr, scenario).get("fast", "/", s.rate);
            record(cell, &loadgen::run(&plan)?);
        }
        Scenario::Next => {
            let plan = base_plan(env, addr, scenario).get("page", "/", s.next_rate);
            record(cell, &loadgen::run(&plan)?);
        }
        Scenario::Baseline => {
            let plan = base_plan(env, addr, scenario).get("fast", "/", s.skew_fast_rate);
            record(cell, &loadgen::run(&plan)?);
        }
        Scenario::Skew | Scenario::SkewKa => {
            let plan = base_plan(env, addr, scenario)
                .get("fast", "/", s.skew_fast_rate)
                .get(
                    "block",
                    &format!("/block?ms={}", s.skew_block_ms),
                    s.skew_block_rate,
                );
            record(cell, &loadgen::run(&plan)?);
        }
        Scenario::NextBaseline
        | Scenario::NextSkew
        | Scenario::NextBaselineSat
        | Scenario::NextSkewSat => {
            let rate = s
                .next_fast_rate_of(scenario)
                .expect("a Next.js baseline or skew scenario");
            // The page is the fast class: what the blocks must not slow.
            let mut plan = base_plan(env, addr, scenario).get("fast", "/", rate);
            if scenario.blocks() {
                plan = plan.get(
                    "block",
                    &format!("/block?ms={}", s.next_block_ms),
                    s.next_block_rate,
                );
            }
            record(cell, &loadgen::run(&plan)?);
        }
        Scenario::Crash if env.front != Front::Direct => crash_storm(env, addr, cell)?,
        Scenario::Crash => crash(env, addr, cell, accept_dir)?,
        Scenario::Reload => reload(env, running, addr, cell)?,
        Scenario::Saturation | Scenario::SaturationKa | Scenario::NextSaturation => {
            saturation(s, scenario, addr, cell)?;
        }
    }
    Ok(())
}

/// Fast requests while, once a second, a worker stalls and exits.
fn crash(
    env: &CellEnv<'_>,
    addr: SocketAddr,
    cell: &mut Cell,
    accept_dir: &Path,
) -> anyhow::Result<()> {
    let s = env.settings;
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
    let plan = base_plan(env, addr, Scenario::Crash)
        .get("fast", "/", s.crash_fast_rate)
        .raw("crash", crash.as_bytes(), 1.0)
        .unique_ports(ip, 20_000..61_000);
    let report = loadgen::run(&plan)?;
    record(cell, &report);
    cell.crash = Some(attribute(&report, accept_dir));
    Ok(())
}

/// Through a front: fast requests while `GET /crash` (the worker that
/// reads it exits at once) arrives every `1 / front_crash_rate` s, on the
/// same kept-alive connections as the fast requests (through nginx: on
/// its upstream pool, which re-sends a request that failed on a pooled
/// connection). Every failed fast request counts; the arms' own accounts
/// of what their crashing workers had in flight are read after the stop.
fn crash_storm(env: &CellEnv<'_>, addr: SocketAddr, cell: &mut Cell) -> anyhow::Result<()> {
    let s = env.settings;
    let plan = base_plan(env, addr, Scenario::Crash)
        .get("fast", "/", s.crash_fast_rate)
        .get("crash", "/crash", s.front_crash_rate);
    let report = loadgen::run(&plan)?;
    record(cell, &report);
    let refused = report
        .classes
        .iter()
        .map(|c| c.errors.get("refused").copied().unwrap_or(0))
        .sum();
    let fast = report.class("fast");
    cell.crash = Some(CrashStats {
        crashes: report.class("crash").map_or(0, |c| c.sent),
        failed: fast.map_or(0, loadgen::ClassReport::failed),
        lost_kinds: fast.map(|c| c.errors.clone()).unwrap_or_default(),
        refused,
        ..CrashStats::default()
    });
    Ok(())
}

/// Fast requests across a rolling reload of the arm.
fn reload(
    env: &CellEnv<'_>,
    running: &Running,
    addr: SocketAddr,
    cell: &mut Cell,
) -> anyhow::Result<()> {
    let s = env.settings;
    let plan = base_plan(env, addr, Scenario::Reload).get("fast", "/", s.reload_fast_rate);
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
    Ok(())
}

/// Rising rates until p99 passes the bound or a request fails.
fn saturation(
    s: &Settings,
    scenario: Scenario,
    addr: SocketAddr,
    cell: &mut Cell,
) -> anyhow::Result<()> {
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
