//! What `bench skew` prints as each run ends, and the results it writes.
use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

use super::{Results, Run, keepalive};
use crate::bench::loadgen::Connections;

/// One line per run: the fast class's latency, failed requests of every
/// class, the agent's cost and the neighbour's CPU; for keep-alive runs a
/// second line with the fast requests that waited behind a block and the
/// release counters.
pub(super) fn print_run(r: &Run) {
    println!(
        "{:<28} fast p50 {:>7.3} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  failed {:>3}{}  agent CPU {:>5.2}%{}{}",
        r.name,
        r.fast.p50_ms,
        r.fast.p99_ms,
        r.fast.p999_ms,
        r.failed(),
        failed_kinds(r),
        r.agent_cpu_percent,
        r.rescues
            .map(|n| format!("  rescues {n}"))
            .unwrap_or_default(),
        r.neighbour.map_or_else(String::new, |n| format!(
            "  neighbour CPU {:.1}% (CPU {})",
            n.cpu_percent, n.core
        ))
    );
    if matches!(r.connections, Connections::KeepAlive(_)) {
        let released = r.released.map_or_else(
            || "n/a (no /metrics)".to_owned(),
            |x| format!("{} (races {})", x.connections, x.races),
        );
        println!(
            "{:<28} fast over {} ms {}  released {released}  client reopened {} closed idle connections",
            "",
            super::SLOW.as_millis(),
            r.fast_slow,
            r.reopened
        );
    }
}

/// ` (fast closed 2, block reset 1)`: failed requests by class and kind;
/// empty when none failed.
fn failed_kinds(r: &Run) -> String {
    let kinds: Vec<String> = std::iter::once(&r.fast)
        .chain(&r.block)
        .flat_map(|c| {
            c.errors
                .iter()
                .map(move |(kind, n)| format!("{} {kind} {n}", c.name))
        })
        .collect();
    if kinds.is_empty() {
        String::new()
    } else {
        format!(" ({})", kinds.join(", "))
    }
}

pub(super) fn write(root: &Path, r: &Results) -> anyhow::Result<()> {
    let dir = root.join("bench/results");
    fs::create_dir_all(&dir)?;
    let day = &r.date[..10];
    let json: PathBuf = dir.join(format!("skew-{day}.json"));
    fs::write(&json, serde_json::to_string_pretty(r)?)?;
    let mut md = format!(
        "# Skew benchmark, {}\n\nMachine: {}. watt-agent {}. 4 workers of tests/fixtures/apps/test-app.js on Node {}. \
         Open-loop load, new connection per request (keepalive runs: over {} kept-alive connections), latency from the scheduled start.\n\n\
         | run | policy | tick | fast p50 | fast p99 | fast p99.9 | failed | agent CPU | released (races) | neighbour CPU (core) |\n|---|---|---|---|---|---|---|---|---|---|\n",
        r.date,
        crate::bench::pairs(&r.machine),
        r.commit,
        r.node,
        keepalive::CONNECTIONS
    );
    for run in &r.runs {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {}{} | {:.2}% | {} | {} |",
            run.name,
            run.policy,
            run.tick,
            run.fast.p50_ms,
            run.fast.p99_ms,
            run.fast.p999_ms,
            run.failed(),
            failed_kinds(run),
            run.agent_cpu_percent,
            run.released
                .map_or_else(String::new, |x| format!("{} ({})", x.connections, x.races)),
            run.neighbour.map_or_else(String::new, |n| format!(
                "{:.1}% ({})",
                n.cpu_percent, n.core
            ))
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
