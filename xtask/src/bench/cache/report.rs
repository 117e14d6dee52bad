//! What `bench cache` prints per arm and the report it writes.
use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

use super::{ArmRun, Results, probe::Footprint};
use crate::bench::loadgen::Connections;

fn mib(kib: u64) -> String {
    #[expect(
        clippy::cast_precision_loss,
        reason = "KiB of a process's memory: far below 2^52"
    )]
    let m = kib as f64 / 1024.0;
    format!("{m:.1} MiB")
}

fn footprint(f: Option<&Footprint>) -> String {
    f.map_or_else(
        || "–".to_owned(),
        |f| {
            format!(
                "{:.1}% / {} (peak {})",
                f.cpu_percent,
                mib(f.rss_kib),
                mib(f.peak_rss_kib)
            )
        },
    )
}

/// Two lines per arm as it ends.
pub(super) fn print_run(r: &ArmRun) {
    eprintln!(
        "      fetch p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms ({} recorded); end-to-end p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms, failed {} {:?}, client lag p99 {:.2} ms",
        r.fetch.p50_ms,
        r.fetch.p99_ms,
        r.fetch.p999_ms,
        r.fetch.count,
        r.end_to_end.p50_ms,
        r.end_to_end.p99_ms,
        r.end_to_end.p999_ms,
        r.end_to_end.failed,
        r.end_to_end.errors,
        r.client.lag_p99_ms,
    );
    eprintln!(
        "      upstream: {} in the warm-up, {} measured; agent CPU/RSS {}; redis {}; Watt main thread {}; all processes {:.1}%{}",
        r.upstream_warmup,
        r.upstream_measured,
        footprint(r.agent.as_ref()),
        footprint(r.redis.as_ref()),
        footprint(r.watt_main.as_ref()),
        r.all_cpu_percent,
        r.agent_cache
            .map(|c| format!(
                "; agent cache hits {} misses {} stores {}",
                c.hits, c.misses, c.stores
            ))
            .unwrap_or_default()
    );
    eprintln!("      log: {}", events(r));
}

/// `worker crashes 0, store unreachable 2, ...`
fn events(r: &ArmRun) -> String {
    crate::bench::pairs(&r.log_counts)
}

/// The report: settings, then one table of latencies and one of costs.
pub(super) fn markdown(r: &Results) -> String {
    let conns = match r.connections {
        Connections::PerRequest => "a new connection per request".to_owned(),
        Connections::KeepAlive(n) => format!("{n} kept-alive client connections"),
    };
    let mut md = format!(
        "# Cache benchmark, {}\n\n\
         `cargo xtask bench cache` (`bench/app/cache-app.js` and `cache-upstream.js`). Machine: {}. \
         Commit `{}`. Versions: {}. Load average {} at the start, {} at the end.\n\n\
         {} workers per arm; {}/s open loop over {conns} to `GET /api`, {} s warm-up (fills the cache), \
         then {} s measured; each request's handler fetches one of {} upstream URLs with the global `fetch` \
         (upstream: {} ms delay, {} B JSON, `Cache-Control: max-age=60`). \
         \"fetch\" is the app's own timing of that fetch (`process.hrtime.bigint()` from before `fetch()` \
         to the end of the body), every worker's measured requests together; \"end-to-end\" is the client's \
         latency from each request's scheduled start. SQLite file on {}.{}\n\n\
         | round | arm | fetch p50 | fetch p99 | fetch p99.9 | end-to-end p50 | p99 | p99.9 | failed | upstream requests (warm-up / measured) | load avg at start |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
        r.date,
        crate::bench::pairs(&r.machine),
        r.commit,
        crate::bench::pairs(&r.versions),
        r.loadavg_start,
        r.loadavg_end,
        r.workers,
        r.rate,
        r.warmup_s,
        r.duration_s,
        r.keys,
        r.upstream_delay_ms,
        r.body_bytes,
        if r.sqlite_fs.is_empty() {
            "?"
        } else {
            &r.sqlite_fs
        },
        if r.agent_cache.is_empty() {
            String::new()
        } else {
            format!(
                " The agent arms' cache settings: `--http-cache=undici=...,{}`.",
                r.agent_cache
            )
        },
    );
    for a in &r.runs {
        let _ = writeln!(
            md,
            "| {} | {} | {:.3} ms | {:.3} ms | {:.3} ms | {:.2} ms | {:.2} ms | {:.2} ms | {} | {} / {} | {} |",
            a.round + 1,
            a.label,
            a.fetch.p50_ms,
            a.fetch.p99_ms,
            a.fetch.p999_ms,
            a.end_to_end.p50_ms,
            a.end_to_end.p99_ms,
            a.end_to_end.p999_ms,
            a.end_to_end.failed,
            a.upstream_warmup,
            a.upstream_measured,
            a.loadavg,
        );
    }
    costs(&mut md, r);
    md
}

/// The costs table: what holds the cache, and every process together.
fn costs(md: &mut String, r: &Results) {
    md.push_str(
        "\nCosts over the measured window (CPU as % of one core; RSS at the end of the window, peak since start):\n\n\
         | round | arm | agent CPU / RSS | redis-server CPU / RSS | Watt main thread CPU / process RSS | all processes CPU | agent cache hits / misses | client lag p99 | log (whole arm) |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for a in &r.runs {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {:.1}% | {} | {:.2} ms | {} |",
            a.round + 1,
            a.label,
            footprint(a.agent.as_ref()),
            footprint(a.redis.as_ref()),
            footprint(a.watt_main.as_ref()),
            a.all_cpu_percent,
            a.agent_cache
                .map_or_else(|| "–".to_owned(), |c| format!("{} / {}", c.hits, c.misses)),
            a.client.lag_p99_ms,
            events(a),
        );
    }
}

/// Writes `bench/results/cache-<stamp>.{json,md}`.
pub(super) fn write(
    root: &Path,
    r: &Results,
    stamp: &str,
    md: &str,
) -> anyhow::Result<Vec<PathBuf>> {
    let dir = root.join("bench/results");
    fs::create_dir_all(&dir)?;
    let json = dir.join(format!("cache-{stamp}.json"));
    fs::write(&json, serde_json::to_string_pretty(r)?)?;
    let mdp = dir.join(format!("cache-{stamp}.md"));
    fs::write(&mdp, md)?;
    Ok(vec![json, mdp])
}
