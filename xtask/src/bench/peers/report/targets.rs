//! The targets, checked on one run's numbers (ratios within the run).
use std::fmt::Write as _;

use super::results::{Results, Target, f};
use crate::bench::{
    loadgen::Summary,
    peers::{
        arms::Arm,
        scenarios::{Cell, Front, Scenario},
    },
};

const PEERS: [Arm; 4] = [Arm::Watt, Arm::Pm2, Arm::Cluster, Arm::Reuseport];

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
    out.extend(front_targets(r));
    for scn in [Scenario::NextSkew, Scenario::NextSkewSat] {
        if r.cells.iter().any(|c| c.scenario == scn.id()) {
            out.push(next_skew_target(r, scn));
        }
    }
    out
}

/// Issue 12's Next.js targets: the page's p99 under blocks no worse than
/// the best peer's at both rates, and below saturation at most 1.5x the
/// agent's own p99 without blocks (next-baseline, same run).
fn next_skew_target(r: &Results, scn: Scenario) -> Target {
    let below = scn == Scenario::NextSkew;
    let agent = fast(r, scn, Arm::Agent);
    let base = fast(r, Scenario::NextBaseline, Arm::Agent).filter(|_| below);
    let best = best_peer(r, scn, Front::Direct);
    let (measured, pass) = match (&agent, best) {
        (Some(a), Some((arm, p99))) => {
            let vs_base = base.as_ref().map(|b| a.p99_ms / b.p99_ms.max(1e-6));
            let base_text = match (below, vs_base, &base) {
                (false, ..) => String::new(),
                (true, Some(x), Some(b)) => format!(
                    "; {x:.2}x the agent's next-baseline p99 ({} ms)",
                    f(b.p99_ms)
                ),
                _ => "; no next-baseline run".into(),
            };
            (
                format!(
                    "watt-agent fast p99 {} ms; best peer {} {} ms{base_text}; {} failed",
                    f(a.p99_ms),
                    arm.label(),
                    f(p99),
                    a.failed
                ),
                Some(a.p99_ms <= p99 && (!below || vs_base.is_some_and(|x| x <= 1.5))),
            )
        }
        _ => ("not measured".into(), None),
    };
    Target {
        scenario: format!(
            "{} ({}/s)",
            scn.id(),
            r.settings.next_fast_rate_of(scn).unwrap_or_default()
        ),
        goal: if below {
            "fast p99 no worse than the best peer's, and at most 1.5x the agent's own next-baseline p99".into()
        } else {
            "fast p99 no worse than the best peer's".into()
        },
        measured,
        pass,
        informational: false,
    }
}

/// The fronts' targets (issue 11): keep-alive skew against the best peer
/// and the agent's own keep-alive baseline, with no failed request; behind
/// nginx, skew no worse than the best peer, a crash storm with no refused
/// connection and no more failed requests than the crashing workers had
/// in flight, and a rolling reload with none failed. Only those whose
/// cells ran.
fn front_targets(r: &Results) -> Vec<Target> {
    let ran = |scn: Scenario, front: Front| {
        r.cells
            .iter()
            .any(|c| c.scenario == scn.id() && c.front == front.id())
    };
    let mut out = Vec::new();
    if ran(Scenario::Skew, Front::Keepalive) {
        out.push(keepalive_skew_target(r));
    }
    if ran(Scenario::Skew, Front::Nginx) {
        out.push(nginx_skew_target(r));
    }
    if ran(Scenario::Crash, Front::Nginx) {
        out.push(nginx_crash_target(r));
    }
    if ran(Scenario::Reload, Front::Nginx) {
        out.push(nginx_reload_target(r));
    }
    out
}

/// The `fast` class of a cell through `front`, when it got answers.
fn fast_via(r: &Results, scn: Scenario, front: Front, arm: Arm) -> Option<Summary> {
    r.cell_via(scn, front, arm)
        .and_then(|c| c.class("fast"))
        .filter(|s| s.ok > 0)
        .cloned()
}

/// The peer with the lowest fast p99 of `scn` through `front`.
fn best_peer(r: &Results, scn: Scenario, front: Front) -> Option<(Arm, f64)> {
    PEERS
        .iter()
        .filter_map(|&a| fast_via(r, scn, front, a).map(|s| (a, s.p99_ms)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

fn keepalive_skew_target(r: &Results) -> Target {
    let agent = fast_via(r, Scenario::Skew, Front::Keepalive, Arm::Agent);
    let base = fast_via(r, Scenario::Baseline, Front::Keepalive, Arm::Agent);
    let best = best_peer(r, Scenario::Skew, Front::Keepalive);
    let (measured, pass) = match (&agent, best) {
        (Some(a), Some((arm, p99))) => {
            let vs_base = base.as_ref().map(|b| a.p99_ms / b.p99_ms.max(1e-6));
            (
                format!(
                    "watt-agent fast p99 {} ms; best peer {} {} ms (ratio 1/{:.1}); {}; {} failed",
                    f(a.p99_ms),
                    arm.label(),
                    f(p99),
                    p99 / a.p99_ms.max(1e-6),
                    match (vs_base, &base) {
                        (Some(x), Some(b)) => format!(
                            "{x:.1}x the agent's keep-alive baseline ({} ms)",
                            f(b.p99_ms)
                        ),
                        _ => "no keep-alive baseline run".into(),
                    },
                    a.failed
                ),
                Some(a.p99_ms * 4.0 <= p99 && vs_base.is_some_and(|x| x <= 3.0) && a.failed == 0),
            )
        }
        _ => ("not measured".into(), None),
    };
    Target {
        scenario: "skew via keepalive".into(),
        goal: "fast p99 at most 1/4 of the best peer's and at most 3x the agent's keep-alive baseline; 0 failed".into(),
        measured,
        pass,
        informational: false,
    }
}

fn nginx_skew_target(r: &Results) -> Target {
    let agent = fast_via(r, Scenario::Skew, Front::Nginx, Arm::Agent);
    let best = best_peer(r, Scenario::Skew, Front::Nginx);
    let (measured, pass) = match (&agent, best) {
        (Some(a), Some((arm, p99))) => (
            format!(
                "watt-agent fast p99 {} ms; best peer {} {} ms; {} failed",
                f(a.p99_ms),
                arm.label(),
                f(p99),
                a.failed
            ),
            Some(a.p99_ms <= p99),
        ),
        _ => ("not measured".into(), None),
    };
    Target {
        scenario: "skew via nginx".into(),
        goal: "fast p99 no worse than the best peer's".into(),
        measured,
        pass,
        informational: false,
    }
}

fn nginx_crash_target(r: &Results) -> Target {
    let (measured, pass) = match r
        .cell_via(Scenario::Crash, Front::Nginx, Arm::Agent)
        .and_then(|c| c.crash.as_ref())
    {
        Some(c) => (
            format!(
                "watt-agent: {} refused connections; {} failed fast requests, {} in flight on the {} crashed workers",
                c.refused,
                c.failed,
                c.in_flight.map_or("?".into(), |n| n.to_string()),
                c.worker_crashes.map_or("?".into(), |n| n.to_string()),
            ),
            Some(c.refused == 0 && c.in_flight.is_some_and(|n| c.failed <= n)),
        ),
        None => ("not measured".into(), None),
    };
    Target {
        scenario: "crash via nginx".into(),
        goal: "never a refused connection; failed requests no more than those in flight on the crashing workers".into(),
        measured,
        pass,
        informational: false,
    }
}

fn nginx_reload_target(r: &Results) -> Target {
    reload_cell_target(
        r.cell_via(Scenario::Reload, Front::Nginx, Arm::Agent),
        "reload via nginx",
    )
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
    reload_cell_target(r.cell(Scenario::Reload, Arm::Agent), "reload")
}

/// A rolling reload's cell (straight to the agent or through a front):
/// nothing failed, and the reload reported its end.
fn reload_cell_target(cell: Option<&Cell>, scenario: &str) -> Target {
    let (measured, pass) = match cell {
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
        scenario: scenario.into(),
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
