//! The markdown report of one run.
use std::{collections::BTreeMap, fmt::Write as _};

use super::results::{Results, f};
use crate::bench::peers::scenarios::{Cell, Settings};

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
    let mut md = String::new();
    header(&mut md, r, chart_file);
    targets_table(&mut md, r);
    if !r.repeats.is_empty() {
        repeats_table(&mut md, r);
    }
    let mut scenarios: Vec<&str> = Vec::new();
    for c in &r.cells {
        if !scenarios.contains(&c.scenario.as_str()) {
            scenarios.push(&c.scenario);
        }
    }
    for scn in scenarios {
        let cells: Vec<&Cell> = r.cells.iter().filter(|c| c.scenario == scn).collect();
        let _ = writeln!(md, "## {scn}\n\n{}\n", scenario_title(&r.settings, scn));
        if scn.contains("saturation") {
            saturation_table(&mut md, &cells);
            continue;
        }
        latency_table(&mut md, &cells);
        match scn {
            "crash" => crash_table(&mut md, &cells),
            "reload" => reload_table(&mut md, &cells),
            _ => {}
        }
    }
    md.push_str(NOTES);
    md
}

/// Title, machine and versions, how the load was made, and the chart.
fn header(md: &mut String, r: &Results, chart_file: &str) {
    let s = &r.settings;
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
}

/// Every target with this run's figure and whether it was met.
fn targets_table(md: &mut String, r: &Results) {
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
}

/// With `--repeats`: every run's key figure and the median the tables show.
fn repeats_table(md: &mut String, r: &Results) {
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

/// A saturation sweep per arm: the highest rate that held, and why the
/// sweep stopped.
fn saturation_table(md: &mut String, cells: &[&Cell]) {
    let _ = writeln!(
        md,
        "| arm | max sustainable rate | p50 at it (ms) | p99 at it (ms) | stopped at | because |\n|---|---:|---:|---:|---:|---|"
    );
    for c in cells {
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
}

/// Latency percentiles per arm and request class.
fn latency_table(md: &mut String, cells: &[&Cell]) {
    let _ = writeln!(
        md,
        "| arm | class | ok/s | failed | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | client lag p99 ms |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for c in cells {
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
}

/// The crash scenario's failed requests, split by where they were lost.
fn crash_table(md: &mut String, cells: &[&Cell]) {
    let _ = writeln!(
        md,
        "Failed fast requests, split by the app's own accept log (client ports are unique within a cell):\n\n| arm | crashes | fast failed | accepted by a worker (in its accept log) | lost before any worker accepted them |\n|---|---:|---:|---:|---|"
    );
    for c in cells {
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

/// How each arm reloads, and how long it took.
fn reload_table(md: &mut String, cells: &[&Cell]) {
    let _ = writeln!(md, "| arm | how | took |\n|---|---|---:|");
    for c in cells {
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

const NOTES: &str = "## Notes\n\n\
- **Keep-alive.** The agent steers connections, not requests: it chooses a worker when a connection is made. A keep-alive connection stays with its worker; if that worker's event loop blocks, the requests already sent on it wait, whoever balanced the connection. What steering can do with keep-alive: new connections avoid a busy worker, and with `--max-requests-per-socket` (the `watt-agent + max-requests-per-socket` arm) clients reconnect every so many requests and get steered again. The client here picks an idle connection from its pool for each request, as HTTP client pools do.\n\
- **Crash.** The crashing worker first blocks for the stall (a request that blocks its event loop), so connections queue on its listener, then exits. Requests the worker had already accepted die with it under every arm. With plain SO_REUSEPORT (Watt's threads, the reusePort arm, `--policy kernel`) the connections still queued on its listener are reset when it exits; the agent's program moves them to another worker; Node cluster and PM2 keep them in the primary, which accepts every connection itself, but the one connection it is handing to the dying worker at that moment is neither answered nor closed (the client times out after 5 s). Watt restarts a crashed worker thread only after seconds on this machine (its log shows when), slower than one crash a second, so at times it has fewer workers left (the failure kinds are in the crash table).\n\
- **Reload.** watt-agent: SIGHUP. PM2: `pm2 reload all`. Watt: `wattpm restart` (workers replaced one at a time). Node cluster: the primary replaces workers one at a time on SIGHUP (bench/app/cluster-primary.js). Plain reusePort processes have no reload: the launcher (bench/app/reuseport-launcher.js) restarts them one at a time, new one first, as a user would.\n\
- **Saturation.** With a new connection per request the client spends about 100 µs of CPU per request (loopback: both ends of the handshake run in its context), so at the top rates client and servers share the 2 cores; the client's lag p99 shows whether it kept its schedule. `cargo xtask bench loadgen` measures the client alone.\n\
- Every arm runs the unchanged tests/fixtures/apps/test-app.js with the same Node 22; Node cluster, PM2 and reusePort workers get bench/app/graceful.js (stop accepting and finish in-flight requests on SIGTERM/SIGINT), the agent's workers its own shim, Watt its own handling. Watt's `restartOnError` is set to the same 100 ms as the others' restart delay (its default is 5 s).\n";
