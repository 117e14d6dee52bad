//! The markdown report of one run.
use std::{collections::BTreeMap, fmt::Write as _};

use super::results::{Results, f};
use crate::bench::peers::{
    arms::Arm,
    scenarios::{Cell, Front, Scenario, Settings},
};

/// A section's title: the scenario's load, and how the clients reach the arm.
fn section_title(s: &Settings, c: &Cell) -> String {
    let front = Front::from_id(&c.front).unwrap_or_default();
    if front == Front::Direct {
        return scenario_title(s, &c.scenario);
    }
    let run = format!("{} s measured after {} s warm-up", s.duration_s, s.warmup_s);
    let load = match c.scenario.as_str() {
        "baseline" => format!("`GET /` at {}/s alone", s.skew_fast_rate),
        "skew" => format!(
            "`GET /` at {}/s plus `GET /block?ms={}` (event loop blocked, no CPU) at {}/s",
            s.skew_fast_rate, s.skew_block_ms, s.skew_block_rate
        ),
        "crash" => format!(
            "`GET /` at {}/s plus `GET /crash` (the worker that reads it exits at once) every {} s, on the same connections",
            s.crash_fast_rate,
            1.0 / s.front_crash_rate
        ),
        "reload" => format!(
            "`GET /` at {}/s; a rolling reload starts {} s into the measured window",
            s.reload_fast_rate, s.reload_at_s
        ),
        other => other.to_owned(),
    };
    format!("{load}, {}, {run}", front.describe(s.front_connections))
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
        "baseline" => format!(
            "`GET /` at {}/s alone (the skew scenario without its blocks), {}, {run}",
            s.skew_fast_rate,
            conns(false)
        ),
        "next" => format!(
            "Next.js standalone `GET /` (dynamic page) at {}/s, {}, {run}",
            s.next_rate,
            conns(false)
        ),
        "next-baseline" | "next-baseline-sat" => format!(
            "Next.js standalone `GET /` (dynamic page, class `fast`) at {}/s ({}) alone, {}, {run}",
            next_rate(s, scn),
            next_rate_kind(scn),
            conns(false)
        ),
        "next-skew" | "next-skew-sat" => format!(
            "Next.js standalone `GET /` (dynamic page, class `fast`) at {}/s ({}) plus `GET /block?ms={}` (a route handler that blocks the event loop, no CPU) at {}/s, {}, {run}",
            next_rate(s, scn),
            next_rate_kind(scn),
            s.next_block_ms,
            s.next_block_rate,
            conns(false)
        ),
        _ => String::new(),
    }
}

/// The page rate of a Next.js baseline or skew scenario, by id.
fn next_rate(s: &Settings, scn: &str) -> f64 {
    Scenario::DEFAULT
        .into_iter()
        .find(|x| x.id() == scn)
        .and_then(|x| s.next_fast_rate_of(x))
        .unwrap_or_default()
}

fn next_rate_kind(scn: &str) -> &'static str {
    if scn.ends_with("-sat") {
        "close to saturation, `--next-sat-rate`"
    } else {
        "below saturation, `--next-fast-rate`"
    }
}

fn errors(e: &BTreeMap<String, u64>) -> String {
    if e.is_empty() {
        String::new()
    } else {
        format!(" ({})", crate::bench::pairs(e))
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
    fronts_table(&mut md, r);
    next_skew_table(&mut md, r);
    let mut sections: Vec<String> = Vec::new();
    for c in &r.cells {
        if !sections.contains(&c.section()) {
            sections.push(c.section());
        }
    }
    for sec in sections {
        let cells: Vec<&Cell> = r.cells.iter().filter(|c| c.section() == sec).collect();
        let _ = writeln!(md, "## {sec}\n\n{}\n", section_title(&r.settings, cells[0]));
        if sec.contains("saturation") {
            saturation_table(&mut md, &cells);
            continue;
        }
        latency_table(&mut md, &cells);
        let direct = cells[0].front == Front::Direct.id();
        match cells[0].scenario.as_str() {
            "crash" if direct => crash_table(&mut md, &cells),
            "crash" => crash_storm_table(&mut md, &cells),
            "reload" => reload_table(&mut md, &cells),
            _ => {}
        }
        if cells.iter().any(|c| c.nginx.is_some()) {
            nginx_table(&mut md, &cells);
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

/// The arms that ran through a front, in the usual order.
fn front_arms(r: &Results) -> Vec<Arm> {
    Arm::ALL
        .into_iter()
        .filter(|a| {
            r.cells
                .iter()
                .any(|c| c.arm == a.id() && c.front != Front::Direct.id())
        })
        .collect()
}

/// One table of the fronts' key figures, arms side by side: the skew
/// scenario's fast p99 next to the baseline's, failed requests, and for
/// the crash storm what the arms say their crashed workers had in flight.
fn fronts_table(md: &mut String, r: &Results) {
    let arms = front_arms(r);
    if arms.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "## Through fronts\n\nKey figures of every cell that ran behind a front ({}), one column per arm; the sections below have the full tables.\n",
        [Front::Keepalive, Front::Nginx]
            .iter()
            .map(|f| format!("{}: {}", f.id(), f.describe(r.settings.front_connections)))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let _ = write!(md, "| front | figure |");
    for a in &arms {
        let _ = write!(md, " {} |", a.label());
    }
    let _ = write!(md, "\n|---|---|");
    for _ in &arms {
        md.push_str("---|");
    }
    md.push('\n');
    for front in [Front::Keepalive, Front::Nginx] {
        let rows = front_rows(r, front);
        for (figure, cells) in rows {
            let _ = write!(md, "| {} | {figure} |", front.id());
            for a in &arms {
                let v = cells
                    .iter()
                    .find(|(arm, _)| arm == a)
                    .map_or_else(|| "-".to_owned(), |(_, v)| v.clone());
                let _ = write!(md, " {v} |");
            }
            md.push('\n');
        }
    }
    md.push('\n');
}

type Row = (String, Vec<(Arm, String)>);

/// The rows of [`fronts_table`] for one front (only scenarios that ran).
fn front_rows(r: &Results, front: Front) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    let mut row = |figure: &str, scn: Scenario, value: &dyn Fn(&Cell) -> Option<String>| {
        let cells: Vec<(Arm, String)> = Arm::ALL
            .into_iter()
            .filter_map(|a| {
                let c = r
                    .cells
                    .iter()
                    .find(|c| c.scenario == scn.id() && c.front == front.id() && c.arm == a.id())?;
                Some((a, if c.ok() { value(c)? } else { c.status.clone() }))
            })
            .collect();
        if !cells.is_empty() {
            rows.push((figure.to_owned(), cells));
        }
    };
    let fast = |c: &Cell| c.class("fast").cloned();
    let failed = |c: &Cell| c.classes.iter().map(|s| s.failed).sum::<u64>();
    row(
        "baseline (no blocks): fast p99 ms",
        Scenario::Baseline,
        &|c| fast(c).map(|s| f(s.p99_ms)),
    );
    row("skew: fast p99 ms", Scenario::Skew, &|c| {
        fast(c).map(|s| f(s.p99_ms))
    });
    row("skew: failed requests", Scenario::Skew, &|c| {
        Some(failed(c).to_string())
    });
    row(
        "crash storm: failed fast requests (of sent)",
        Scenario::Crash,
        &|c| fast(c).map(|s| format!("{} of {}", s.failed, s.sent)),
    );
    row(
        "crash storm: worker crashes / fast requests in flight on them",
        Scenario::Crash,
        &|c| {
            let x = c.crash.as_ref()?;
            Some(match (x.worker_crashes, x.in_flight) {
                (Some(n), Some(i)) => format!("{n} / {i}"),
                _ => "n/a".into(),
            })
        },
    );
    row("crash storm: refused connections", Scenario::Crash, &|c| {
        c.crash.as_ref().map(|x| x.refused.to_string())
    });
    row("rolling reload: failed requests", Scenario::Reload, &|c| {
        Some(failed(c).to_string())
    });
    rows
}

/// A figure of a cell, for a row of a summary table.
type Figure = fn(&Cell) -> Option<String>;

/// The Next.js baseline and skew scenarios' key figures, one column per
/// arm: the page's p99, p99.9 and failed requests at both rates.
fn next_skew_table(md: &mut String, r: &Results) {
    let scenarios = [
        Scenario::NextBaseline,
        Scenario::NextSkew,
        Scenario::NextBaselineSat,
        Scenario::NextSkewSat,
    ];
    let ran = |a: Arm| {
        r.cells
            .iter()
            .any(|c| c.arm == a.id() && scenarios.iter().any(|s| c.scenario == s.id()))
    };
    let arms: Vec<Arm> = Arm::ALL.into_iter().filter(|&a| ran(a)).collect();
    if arms.is_empty() {
        return;
    }
    let s = &r.settings;
    let _ = writeln!(
        md,
        "## Next.js skew

The page (`fast`) of the Next.js standalone fixture at {}/s (below saturation) and {}/s (close to saturation), alone (`next-baseline*`) and with `GET /block?ms={}` at {}/s (`next-skew*`), one column per arm; failed counts every class. The sections below have the full tables.\n",
        s.next_fast_rate, s.next_sat_rate, s.next_block_ms, s.next_block_rate
    );
    let _ = write!(md, "| scenario | figure |");
    for a in &arms {
        let _ = write!(md, " {} |", a.label());
    }
    let _ = write!(md, "\n|---|---|");
    for _ in &arms {
        md.push_str("---:|");
    }
    md.push('\n');
    let figures: [(&str, Figure); 3] = [
        ("fast p99 ms", |c| {
            c.class("fast").filter(|x| x.ok > 0).map(|x| f(x.p99_ms))
        }),
        ("fast p99.9 ms", |c| {
            c.class("fast").filter(|x| x.ok > 0).map(|x| f(x.p999_ms))
        }),
        ("failed", |c| {
            Some(c.classes.iter().map(|x| x.failed).sum::<u64>().to_string())
        }),
    ];
    for scn in scenarios {
        for (name, value) in &figures {
            let cells: Vec<Option<&Cell>> = arms
                .iter()
                .map(|a| {
                    r.cells.iter().find(|c| {
                        c.scenario == scn.id() && c.front == Front::Direct.id() && c.arm == a.id()
                    })
                })
                .collect();
            if cells.iter().all(Option::is_none) {
                continue;
            }
            let _ = write!(md, "| {} | {name} |", scn.id());
            for c in cells {
                let v = match c {
                    None => "-".to_owned(),
                    Some(c) if !c.ok() => c.status.clone(),
                    Some(c) => value(c).unwrap_or_else(|| "-".into()),
                };
                let _ = write!(md, " {v} |");
            }
            md.push('\n');
        }
    }
    md.push('\n');
}

/// The crash storm through a front: every failed fast request, and what
/// the arm's own account says its crashed workers had in flight.
fn crash_storm_table(md: &mut String, cells: &[&Cell]) {
    let _ = writeln!(
        md,
        "Failed fast requests against what the crashing workers had in flight (watt-agent: its crash lines; Node cluster, PM2, reusePort: the bench preload's exit records; Watt gives no account). Worker crashes can outnumber crash requests: a proxy re-sends a request that failed on a pooled connection.\n\n| arm | crash requests | worker crashes | fast requests in flight on them | fast failed | refused connections |\n|---|---:|---:|---:|---|---:|"
    );
    for c in cells {
        if let Some(x) = &c.crash {
            let n = |v: Option<u64>| v.map_or_else(|| "n/a".into(), |v| v.to_string());
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {}{} | {} |",
                c.label,
                x.crashes,
                n(x.worker_crashes),
                n(x.in_flight),
                x.failed,
                errors(&x.lost_kinds),
                x.refused
            );
        }
    }
    md.push('\n');
}

/// What nginx's logs say (warm-up included): failed upstream attempts by
/// cause, and requests it tried more than once.
fn nginx_table(md: &mut String, cells: &[&Cell]) {
    let _ = writeln!(
        md,
        "nginx's logs (warm-up included): failed upstream attempts by cause, and requests it sent upstream more than once (`proxy_next_upstream error timeout`, nginx's default, re-sends a request that failed on a pooled connection):\n\n| arm | failed upstream attempts | fast: retried / answered 5xx | other requests: retried / tries / answered 5xx |\n|---|---|---|---|"
    );
    for c in cells {
        let Some(n) = &c.nginx else { continue };
        let total: u64 = n.upstream_errors.values().sum();
        let fast = n.requests.get("fast").cloned().unwrap_or_default();
        let others: Vec<String> = n
            .requests
            .iter()
            .filter(|(k, _)| k.as_str() != "fast")
            .map(|(k, p)| format!("{k}: {} / {} / {}", p.retried, p.tries, p.status_5xx))
            .collect();
        let _ = writeln!(
            md,
            "| {} | {total}{} | {} / {} | {} |",
            c.label,
            errors(&n.upstream_errors),
            fast.retried,
            fast.status_5xx,
            if others.is_empty() {
                "-".into()
            } else {
                others.join("; ")
            }
        );
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
- **Fronts.** `keepalive`: the client keeps 50 connections to the arm open and sends each request on an idle one (checking, as pools do, that the server has not closed it meanwhile). `nginx`: Debian's nginx on loopback, one worker process, one upstream (the arm) with `keepalive 64` idle connections, HTTP/1.1, `proxy_next_upstream` at its default (`error timeout`): a request that fails on a pooled upstream connection is sent again, also a `GET /crash`; the client keeps 50 connections to nginx. Every 5xx from nginx (502, 504) and every connection error, reset or refusal counts as a failed request. The crash storm through a front sends `GET /crash` every 2 s on the same connections as the fast requests: a worker exits at once on reading it, with whatever else it had in flight.\n\
- **Saturation.** With a new connection per request the client spends about 100 µs of CPU per request (loopback: both ends of the handshake run in its context), so at the top rates client and servers share the 2 cores; the client's lag p99 shows whether it kept its schedule. `cargo xtask bench loadgen` measures the client alone.\n\
- Every arm runs the unchanged tests/fixtures/apps/test-app.js with the same Node 22; Node cluster, PM2 and reusePort workers get bench/app/graceful.js (stop accepting and finish in-flight requests on SIGTERM/SIGINT), the agent's workers its own shim, Watt its own handling. Watt's `restartOnError` is set to the same 100 ms as the others' restart delay (its default is 5 s).\n";
