//! Results: JSON, a markdown report with the targets checked, and the
//! files under bench/results/ (plus the latest table in bench/README.md).
use std::{collections::BTreeMap, fmt::Write as _, fs, path::Path};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::{
    arms::Arm,
    scenarios::{Cell, Scenario, Settings},
};
use crate::bench::loadgen::Summary;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    /// UTC, e.g. 2026-11-27T07:40:00Z.
    pub date: String,
    pub machine: BTreeMap<String, String>,
    pub versions: BTreeMap<String, String>,
    pub settings: Settings,
    /// One cell per scenario and arm: with `--repeats`, the median run.
    pub cells: Vec<Cell>,
    /// With `--repeats`: every run's figure, per scenario and arm.
    #[serde(default)]
    pub repeats: Vec<Repeat>,
    pub targets: Vec<Target>,
    /// Wall time of the whole run.
    pub seconds: f64,
}

/// The runs of one scenario on one arm, by the scenario's key figure.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Repeat {
    pub scenario: String,
    pub label: String,
    pub figure: String,
    /// In run order; `None` for a run that failed.
    pub values: Vec<Option<f64>>,
}

/// One of the targets, checked on this run's numbers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Target {
    pub scenario: String,
    pub goal: String,
    pub measured: String,
    /// `None`: this run lacks the numbers (an arm or scenario was not run).
    pub pass: Option<bool>,
    /// Reported, not a target: the keep-alive variants.
    #[serde(default)]
    pub informational: bool,
}

impl Results {
    #[must_use]
    pub fn cell(&self, scenario: Scenario, arm: Arm) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.scenario == scenario.id() && c.arm == arm.id() && c.ok())
    }
}

const PEERS: [Arm; 4] = [Arm::Watt, Arm::Pm2, Arm::Cluster, Arm::Reuseport];

fn f(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Checks the targets (ratios within this run).
#[must_use]
pub fn targets(r: &Results) -> Vec<Target> {
    let mut out = Vec::new();
    for scn in [Scenario::Skew, Scenario::SkewKa] {
        out.push(skew_target(r, scn));
    }
    out.push(crash_target(r));
    out.push(reload_target(r));
    for scn in [Scenario::Uniform, Scenario::UniformKa] {
        out.push(uniform_target(r, scn));
    }
    for scn in [Scenario::Saturation, Scenario::SaturationKa] {
        out.push(saturation_target(r, scn));
    }
    out
}

/// The `fast` class of a cell, when it got answers: a class with no answer
/// has no latency (its figures read 0), not a measurement a target may
/// pass on.
fn fast(r: &Results, scn: Scenario, arm: Arm) -> Option<Summary> {
    r.cell(scn, arm)
        .and_then(|c| c.class("fast"))
        .filter(|s| s.ok > 0)
        .cloned()
}

/// `, <arm> <figure>` for each of `others`, for a target's `measured`.
fn peer_figures(others: &[(Arm, f64)], figure: impl Fn(f64) -> String) -> String {
    others.iter().fold(String::new(), |mut s, (arm, v)| {
        let _ = write!(s, ", {} {}", arm.label(), figure(*v));
        s
    })
}

fn skew_target(r: &Results, scn: Scenario) -> Target {
    let agent = fast(r, scn, Arm::Agent);
    let best = PEERS
        .iter()
        .filter_map(|&a| fast(r, scn, a).map(|s| (a, s.p99_ms)))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    let (measured, pass) = match (&agent, best) {
        (Some(a), Some((arm, p99))) => (
            format!(
                "watt-agent fast p99 {} ms; best peer {} {} ms (ratio 1/{:.1})",
                f(a.p99_ms),
                arm.label(),
                f(p99),
                p99 / a.p99_ms.max(1e-6)
            ),
            Some(a.p99_ms * 10.0 <= p99),
        ),
        _ => ("not measured".into(), None),
    };
    Target {
        scenario: scn.id().into(),
        goal: "fast-request p99 at most 1/10 of the best peer's".into(),
        measured,
        pass,
        informational: scn.keep_alive(),
    }
}

fn crash_target(r: &Results) -> Target {
    let crash = |arm: Arm| r.cell(Scenario::Crash, arm).and_then(|c| c.crash.clone());
    let (measured, pass) = match crash(Arm::Agent) {
        Some(a) => {
            let others: Vec<String> = [Arm::Watt, Arm::Reuseport, Arm::Pm2, Arm::Cluster]
                .iter()
                .filter_map(|&arm| crash(arm).map(|c| format!("{} {}", arm.label(), c.lost)))
                .collect();
            (
                format!(
                    "watt-agent: {} failed, {} of them already accepted by a worker, {} lost before any worker accepted them; lost by peers: {}",
                    a.failed,
                    a.accepted,
                    a.lost,
                    if others.is_empty() {
                        "-".into()
                    } else {
                        others.join(", ")
                    }
                ),
                Some(a.lost == 0),
            )
        }
        None => ("not measured".into(), None),
    };
    Target {
        scenario: "crash".into(),
        goal: "zero failed requests other than those the crashing worker had accepted".into(),
        measured,
        pass,
        informational: false,
    }
}

fn reload_target(r: &Results) -> Target {
    let (measured, pass) = match r.cell(Scenario::Reload, Arm::Agent) {
        Some(c) => {
            let failed: u64 = c.classes.iter().map(|s| s.failed).sum();
            let done = c.reload.as_ref().is_some_and(|x| x.error.is_none());
            (
                format!(
                    "{failed} failed{}",
                    if done {
                        ""
                    } else {
                        " (the reload did not report completion)"
                    }
                ),
                Some(failed == 0 && done),
            )
        }
        None => ("not measured".into(), None),
    };
    Target {
        scenario: "reload".into(),
        goal: "zero failed requests during a rolling reload".into(),
        measured,
        pass,
        informational: false,
    }
}

fn uniform_target(r: &Results, scn: Scenario) -> Target {
    let p50 = |arm| fast(r, scn, arm).map(|s| s.p50_ms);
    let (measured, pass) = match (p50(Arm::Agent), p50(Arm::Reuseport)) {
        (Some(a), Some(rp)) => {
            let others: Vec<(Arm, f64)> = [Arm::Pm2, Arm::Cluster]
                .iter()
                .filter_map(|&x| p50(x).map(|v| (x, v)))
                .collect();
            let beats = others.iter().all(|(_, v)| a < *v);
            (
                format!(
                    "p50: watt-agent {} ms, reusePort {} ms{}",
                    f(a),
                    f(rp),
                    peer_figures(&others, |v| format!("{} ms", f(v)))
                ),
                Some(a <= rp * 1.02 && beats),
            )
        }
        _ => ("not measured".into(), None),
    };
    Target {
        scenario: scn.id().into(),
        goal: "p50 within 2% of plain reusePort, and lower than PM2's and Node cluster's".into(),
        measured,
        pass,
        informational: scn.keep_alive(),
    }
}

fn saturation_target(r: &Results, scn: Scenario) -> Target {
    // `Some(None)`: the sweep ran and not even its first step passed.
    let max = |arm| {
        r.cell(scn, arm)
            .and_then(|c| c.sweep.as_ref())
            .map(|s| s.max_rate)
    };
    let (measured, pass) = match (max(Arm::Agent).flatten(), max(Arm::Reuseport).flatten()) {
        (Some(a), Some(rp)) => {
            // A peer whose first step failed sustains less than any rate.
            let others: Vec<(Arm, f64)> = [Arm::Pm2, Arm::Cluster]
                .iter()
                .filter_map(|&x| max(x).map(|v| (x, v.unwrap_or(0.0))))
                .collect();
            let beats = others.iter().all(|(_, v)| a > *v);
            (
                format!(
                    "max sustainable rate: watt-agent {a:.0}/s, reusePort {rp:.0}/s{}",
                    peer_figures(&others, |v| format!("{v:.0}/s"))
                ),
                Some(a >= rp * 0.98 && beats),
            )
        }
        _ => ("not measured".into(), None),
    };
    Target {
        scenario: scn.id().into(),
        goal: "maximum sustainable rate at least plain reusePort's minus 2%, and above PM2's and Node cluster's".into(),
        measured,
        pass,
        informational: scn.keep_alive(),
    }
}

fn scenario_title(s: &Settings, scn: &str) -> String {
    let conns = |ka: bool| {
        if ka {
            format!("keep-alive over {} connections", s.ka_connections)
        } else {
            "a new connection per request".into()
        }
    };
    let run = format!("{} s measured after {} s warm-up", s.duration_s, s.warmup_s);
    match scn {
        "uniform" | "uniform-ka" => format!(
            "`GET /` at {}/s, {}, {run}",
            s.rate,
            conns(scn.ends_with("ka"))
        ),
        "skew" | "skew-ka" => format!(
            "`GET /` at {}/s plus `GET /block?ms={}` (event loop blocked, no CPU) at {}/s, {}, {run}",
            s.skew_fast_rate,
            s.skew_block_ms,
            s.skew_block_rate,
            conns(scn.ends_with("ka"))
        ),
        "crash" => format!(
            "`GET /` at {}/s; once a second one connection sends `GET /block?ms={}` then `GET /crash` (a worker stalls, then exits), {run}",
            s.crash_fast_rate, s.crash_stall_ms
        ),
        "reload" => format!(
            "`GET /` at {}/s; a rolling reload starts {} s into the measured window, {run}",
            s.reload_fast_rate, s.reload_at_s
        ),
        "saturation" | "saturation-ka" | "next-saturation" => format!(
            "rate from {}/s up x{} per {} s step until p99 > {} ms or a request fails (a failed step is run once more before the sweep stops), {}",
            match scn {
                "next-saturation" => s.next_sweep_start,
                "saturation-ka" => s.sweep_start_ka,
                _ => s.sweep.start,
            },
            s.sweep.factor,
            s.sweep_step_s,
            s.sweep.p99_bound_ms,
            conns(scn == "saturation-ka")
        ),
        "next" => format!(
            "Next.js standalone `GET /` (dynamic page) at {}/s, {}, {run}",
            s.next_rate,
            conns(false)
        ),
        _ => String::new(),
    }
}

fn errors(e: &BTreeMap<String, u64>) -> String {
    if e.is_empty() {
        String::new()
    } else {
        format!(
            " ({})",
            e.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// The markdown report.
#[must_use]
pub fn markdown(r: &Results, chart_file: &str) -> String {
    let s = &r.settings;
    let mut md = String::new();
    let v = |k: &str| r.versions.get(k).cloned().unwrap_or_else(|| "?".into());
    let _ = writeln!(md, "# watt-agent and its peers, side by side\n");
    let _ = writeln!(
        md,
        "{} · {} ({} CPUs, {}), Linux {} · watt-agent {} · Node {} · Watt (wattpm {}, @platformatic/node {}) · PM2 {} · {} workers per arm · run took {:.0} s\n",
        r.date,
        r.machine.get("cpu").map_or("?", String::as_str),
        r.machine.get("nproc").map_or("?", String::as_str),
        r.machine.get("memory").map_or("?", String::as_str),
        r.machine.get("kernel").map_or("?", String::as_str),
        v("watt-agent"),
        v("node"),
        v("wattpm"),
        v("@platformatic/node"),
        v("pm2"),
        s.workers,
        r.seconds
    );
    let _ = writeln!(
        md,
        "Load: open loop from one client thread on the same machine, to 127.0.0.1 only; latency counts from each request's scheduled start (coordinated omission corrected). \"client lag\" is how late the client itself was: when it is high, so are the numbers below it, for every arm.\n"
    );
    let _ = writeln!(md, "![latency percentiles per arm]({chart_file})\n");

    let _ = writeln!(
        md,
        "## Targets\n\n| scenario | target | this run | |\n|---|---|---|---|"
    );
    for t in &r.targets {
        let mark = match (t.pass, t.informational) {
            (Some(true), false) => "met",
            (Some(false), false) => "**not met**",
            (Some(true), true) => "would be met (keep-alive: informational)",
            (Some(false), true) => "not met (keep-alive: informational)",
            (None, _) => "n/a",
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {mark} |",
            t.scenario, t.goal, t.measured
        );
    }
    md.push('\n');

    if !r.repeats.is_empty() {
        let runs = r.repeats.iter().map(|x| x.values.len()).max().unwrap_or(0);
        let _ = writeln!(
            md,
            "## Repeats\n\nEvery cell ran {runs} times, round after round, the arms in a rotated order each round (so no arm always goes first); the tables below show each cell's median run by this figure.\n\n| scenario | arm | figure | runs | median |\n|---|---|---|---|---:|"
        );
        for x in &r.repeats {
            let shown: Vec<String> = x
                .values
                .iter()
                .map(|v| v.map_or_else(|| "failed".into(), f))
                .collect();
            let mut ok: Vec<f64> = x.values.iter().flatten().copied().collect();
            ok.sort_by(f64::total_cmp);
            let median = ok
                .get(ok.len().saturating_sub(1) / 2)
                .map_or_else(|| "-".into(), |v| f(*v));
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {median} |",
                x.scenario,
                x.label,
                x.figure,
                shown.join(", ")
            );
        }
        md.push('\n');
    }

    let mut scenarios: Vec<&str> = Vec::new();
    for c in &r.cells {
        if !scenarios.contains(&c.scenario.as_str()) {
            scenarios.push(&c.scenario);
        }
    }
    for scn in scenarios {
        let cells: Vec<&Cell> = r.cells.iter().filter(|c| c.scenario == scn).collect();
        let _ = writeln!(md, "## {scn}\n\n{}\n", scenario_title(s, scn));
        if scn.contains("saturation") {
            let _ = writeln!(
                md,
                "| arm | max sustainable rate | p50 at it (ms) | p99 at it (ms) | stopped at | because |\n|---|---:|---:|---:|---:|---|"
            );
            for c in &cells {
                let Some(sw) = &c.sweep else {
                    let _ = writeln!(
                        md,
                        "| {} | {} | | | | {} |",
                        c.label,
                        c.status,
                        c.error.as_deref().unwrap_or("").replace('\n', " ")
                    );
                    continue;
                };
                let best = c.classes.first();
                let last = sw.steps.last().filter(|st| !st.passed);
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} |",
                    c.label,
                    sw.max_rate
                        .map_or("< first step".into(), |m| format!("{m:.0}/s")),
                    best.map_or(String::new(), |b| f(b.p50_ms)),
                    best.map_or(String::new(), |b| f(b.p99_ms)),
                    last.map_or("-".into(), |l| format!("{:.0}/s", l.rate)),
                    last.and_then(|l| l.reason.clone())
                        .unwrap_or_else(|| "reached the last step".into())
                );
            }
            md.push('\n');
            continue;
        }
        let _ = writeln!(
            md,
            "| arm | class | ok/s | failed | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | client lag p99 ms |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for c in &cells {
            if !c.ok() {
                let _ = writeln!(
                    md,
                    "| {} | {} | | | | | | | | {} |",
                    c.label,
                    c.status,
                    c.error
                        .as_deref()
                        .unwrap_or("")
                        .lines()
                        .next()
                        .unwrap_or("")
                );
                continue;
            }
            for (i, cl) in c.classes.iter().enumerate() {
                let lag = c.client.as_ref().map_or(String::new(), |x| f(x.lag_p99_ms));
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.0} | {}{} | {} | {} | {} | {} | {} | {} |",
                    if i == 0 { c.label.as_str() } else { "" },
                    cl.name,
                    cl.throughput,
                    cl.failed,
                    errors(&cl.errors),
                    f(cl.p50_ms),
                    f(cl.p90_ms),
                    f(cl.p99_ms),
                    f(cl.p999_ms),
                    f(cl.max_ms),
                    if i == 0 { lag } else { String::new() }
                );
            }
        }
        md.push('\n');
        if scn == "crash" {
            let _ = writeln!(
                md,
                "Failed fast requests, split by the app's own accept log (client ports are unique within a cell):\n\n| arm | crashes | fast failed | accepted by a worker (in its accept log) | lost before any worker accepted them |\n|---|---:|---:|---:|---|"
            );
            for c in &cells {
                if let Some(x) = &c.crash {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {} | {}{} |",
                        c.label,
                        x.crashes,
                        x.failed,
                        x.accepted,
                        x.lost,
                        errors(&x.lost_kinds)
                    );
                }
            }
            md.push('\n');
        }
        if scn == "reload" {
            let _ = writeln!(md, "| arm | how | took |\n|---|---|---:|");
            for c in &cells {
                if let Some(x) = &c.reload {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {:.1} s |",
                        c.label,
                        x.error.as_ref().map_or(x.how.clone(), |e| format!(
                            "failed: {}",
                            e.lines().next().unwrap_or("")
                        )),
                        x.took_s
                    );
                }
            }
            md.push('\n');
        }
    }
    md.push_str(NOTES);
    md
}

const NOTES: &str = "## Notes\n\n\
- **Keep-alive.** The agent steers connections, not requests: it chooses a worker when a connection is made. A keep-alive connection stays with its worker; if that worker's event loop blocks, the requests already sent on it wait, whoever balanced the connection. What steering can do with keep-alive: new connections avoid a busy worker, and with `--max-requests-per-socket` (the `watt-agent + max-requests-per-socket` arm) clients reconnect every so many requests and get steered again. The client here picks an idle connection from its pool for each request, as HTTP client pools do.\n\
- **Crash.** The crashing worker first blocks for the stall (a request that blocks its event loop), so connections queue on its listener, then exits. Requests the worker had already accepted die with it under every arm. With plain SO_REUSEPORT (Watt's threads, the reusePort arm, `--policy kernel`) the connections still queued on its listener are reset when it exits; the agent's program moves them to another worker; Node cluster and PM2 keep them in the primary, which accepts every connection itself, but the one connection it is handing to the dying worker at that moment is neither answered nor closed (the client times out after 5 s). Watt restarts a crashed worker thread only after seconds on this machine (its log shows when), slower than one crash a second, so at times it has fewer workers left (the failure kinds are in the crash table).\n\
- **Reload.** watt-agent: SIGHUP. PM2: `pm2 reload all`. Watt: `wattpm restart` (workers replaced one at a time). Node cluster: the primary replaces workers one at a time on SIGHUP (bench/app/cluster-primary.js). Plain reusePort processes have no reload: the launcher (bench/app/reuseport-launcher.js) restarts them one at a time, new one first, as a user would.\n\
- **Saturation.** With a new connection per request the client spends about 100 µs of CPU per request (loopback: both ends of the handshake run in its context), so at the top rates client and servers share the 2 cores; the client's lag p99 shows whether it kept its schedule. `cargo xtask bench loadgen` measures the client alone.\n\
- Every arm runs the unchanged tests/fixtures/apps/test-app.js with the same Node 22; Node cluster, PM2 and reusePort workers get bench/app/graceful.js (stop accepting and finish in-flight requests on SIGTERM/SIGINT), the agent's workers its own shim, Watt its own handling. Watt's `restartOnError` is set to the same 100 ms as the others' restart delay (its default is 5 s).\n";

/// Writes `peers-<stamp>.{json,md,svg}` under bench/results/ and, when
/// `latest` (a run of every scenario and arm), `latest.{md,svg}` and the
/// table in bench/README.md.
pub fn write(
    root: &Path,
    r: &Results,
    stamp: &str,
    svg: &str,
    latest: bool,
) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let dir = root.join("bench/results");
    fs::create_dir_all(&dir)?;
    let base = format!("peers-{stamp}");
    let json = dir.join(format!("{base}.json"));
    fs::write(&json, serde_json::to_string_pretty(r)?)?;
    let svg_path = dir.join(format!("{base}.svg"));
    fs::write(&svg_path, svg)?;
    let md_path = dir.join(format!("{base}.md"));
    fs::write(&md_path, markdown(r, &format!("{base}.svg")))?;
    if !latest {
        return Ok(vec![json, md_path, svg_path]);
    }
    fs::write(dir.join("latest.svg"), svg)?;
    fs::write(dir.join("latest.md"), markdown(r, "latest.svg"))?;
    update_readme(root, r)?;
    Ok(vec![
        json,
        md_path,
        svg_path,
        dir.join("latest.md"),
        dir.join("latest.svg"),
    ])
}

const BEGIN: &str = "<!-- latest-peers:begin -->";
const END: &str = "<!-- latest-peers:end -->";

/// Replaces the part of bench/README.md between the markers with this run's
/// report (links rewritten to results/).
fn update_readme(root: &Path, r: &Results) -> anyhow::Result<()> {
    let path = root.join("bench/README.md");
    let text = fs::read_to_string(&path).context("read bench/README.md")?;
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        anyhow::bail!("bench/README.md lacks the {BEGIN} / {END} markers");
    };
    let body = markdown(r, "results/latest.svg")
        .replacen(
            "# watt-agent and its peers, side by side",
            "### Latest run",
            1,
        )
        .replace("\n## ", "\n#### ");
    let new = format!(
        "{}{BEGIN}\n{body}\n{END}{}",
        &text[..b],
        &text[e + END.len()..]
    );
    fs::write(&path, new)?;
    Ok(())
}
