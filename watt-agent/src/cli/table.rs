//! The status table of `watt-agent status` and `watt-agent top`.
use std::{
    fmt::Write as _,
    time::{Duration, SystemTime},
};

use crate::{
    admin::status::{Status, WorkerStatus},
    config::LoopSignal,
    sampler::QueueSourceKind,
    supervisor::crashes::LastCrash,
};

/// The status as a table. With `rates` (seconds since, previous status),
/// CPU and connections are shown per second.
#[must_use]
pub fn render_status(s: &Status, rates: Option<(f64, &Status)>) -> String {
    let mut out = summary(s);
    out.push('\n');
    let (cpu_head, conn_head) = if rates.is_some() {
        ("CPU%", "CONN/S")
    } else {
        ("CPU", "CONNS")
    };
    let _ = writeln!(
        out,
        "{:<6} {:<5} {:<8} {:<9} {:<9} {:<8} {:<6} {:<8} {:<11} {:<8} {:<8} NOTE",
        "WORKER",
        "SLOT",
        "PID",
        "STATE",
        "UPTIME",
        "RESTARTS",
        "QUEUE",
        cpu_head,
        "RSS",
        conn_head,
        "STALL",
    );
    for w in &s.workers {
        // The same worker in the previous status: same id and same process.
        let prev = rates.and_then(|(dt, p)| {
            p.workers
                .iter()
                .find(|x| x.id == w.id && x.pid == w.pid)
                .map(|x| (dt, x))
        });
        out.push_str(worker_row(w, prev).trim_end());
        out.push('\n');
    }
    out
}

/// A line per request every worker refuses (the quarantine).
fn quarantine_lines(s: &Status) -> String {
    let mut out = String::new();
    for q in &s.quarantined {
        let _ = writeln!(
            out,
            "quarantined: {} (in flight on {} crashes), answered 503 until {}",
            q.request, q.crashes, q.until
        );
    }
    out
}

/// The shared HTTP cache's line: hit ratio, use, evictions.
fn cache_line(c: &crate::admin::status::CacheStatus) -> String {
    let ratio = c.hit_ratio.map_or_else(
        || "no lookups yet".to_owned(),
        |r| format!("{:.1}% hits", r * 100.0),
    );
    let store = if c.store_up {
        c.store.clone()
    } else {
        format!("{}: DOWN, {} failed calls", c.store, c.store_errors)
    };
    let mut line = format!(
        "http cache ({store}): {ratio} ({} hits, {} misses)",
        c.hits, c.misses
    );
    if let (Some(entries), Some(bytes), Some(max)) = (c.entries, c.bytes, c.max_bytes) {
        let _ = write!(
            line,
            ", {entries} entries, {} of {} used, {} evicted",
            bytesize::ByteSize(bytes).display().iec(),
            bytesize::ByteSize(max).display().iec(),
            c.evictions
        );
    }
    line.push('\n');
    line
}

/// The lines above the table: the agent, readiness, the program's
/// counters and how queue depths are measured.
fn summary(s: &Status) -> String {
    let mut out = String::new();
    let flags = [
        s.reloading.then_some("reloading"),
        s.shutting_down.then_some("shutting down"),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ");
    let _ = writeln!(
        out,
        "watt-agent {} (pid {}) up {}, listening on {}, policy {}",
        s.version,
        s.pid,
        human_duration(s.uptime_seconds),
        s.listen,
        s.policy
    );
    let _ = writeln!(
        out,
        "{} of {} workers ready (min {}): {}{}",
        s.ready,
        s.workers_configured,
        s.min_ready,
        if s.is_ready { "ready" } else { "NOT READY" },
        if flags.is_empty() {
            String::new()
        } else {
            format!(", {flags}")
        }
    );
    if let Some(p) = &s.program {
        let _ = write!(
            out,
            "program ({}): {} connections, {} migrated, {} fallbacks, {} while none ready",
            p.mode.as_str(),
            p.connections,
            p.migrations,
            p.fallbacks,
            p.no_ready_slot
        );
        if let (Some(t), Some(n)) = (p.run_time_seconds, p.runs)
            && n > 0
        {
            #[expect(
                clippy::cast_precision_loss,
                reason = "a run count far below 2^53; the figure is printed rounded"
            )]
            let per = t / n as f64 * 1e9;
            let _ = write!(out, ", {per:.0}ns per decision");
        }
        out.push('\n');
    }
    if let Some(c) = &s.http_cache {
        out.push_str(&cache_line(c));
    }
    out.push_str(&quarantine_lines(s));
    match s.queue_depth_source {
        Some(QueueSourceKind::SockDiag) => {}
        Some(QueueSourceKind::ProcNetTcp) => {
            out.push_str("queue depths: from /proc/net/tcp (sock_diag does not work here)\n");
        }
        None => out.push_str("queue depths: NONE (neither sock_diag nor /proc/net/tcp works)\n"),
    }
    match (s.loop_signal, s.loop_hook) {
        (Some(LoopSignal::Kernel), Some(hook)) => {
            let _ = writeln!(
                out,
                "event loops: turns counted by the kernel ({}); STALL is the longest of the last \
                 30-60 s",
                hook.as_str()
            );
        }
        (Some(LoopSignal::Proc), _) => out.push_str(
            "event loops: from /proc (the kernel's count did not load; `watt-agent doctor` says \
             why): no stall figures\n",
        ),
        _ => {}
    }
    out
}

/// One worker's row (with trailing spaces when the note is empty).
fn worker_row(w: &WorkerStatus, prev: Option<(f64, &WorkerStatus)>) -> String {
    let (cpu, conns) = columns(w, prev);
    let mut note = Vec::new();
    if w.crash_looping {
        note.push("crash loop".to_owned());
    }
    if let Some(t) = w.restart_in_seconds {
        note.push(format!("restart in {t:.1}s"));
    }
    if let Some(r) = &w.replacement {
        note.push(format!("replacement on slot {} pid {}", r.slot, opt(r.pid)));
    }
    if let Some(c) = &w.last_crash {
        note.push(crash_note(c, SystemTime::now()));
    }
    let stall = w
        .load
        .measured
        .event_loop
        .as_ref()
        .and_then(|l| l.longest_recent_stall)
        .map_or_else(|| "-".into(), human_millis);
    format!(
        "{:<6} {:<5} {:<8} {:<9} {:<9} {:<8} {:<6} {:<8} {:<11} {:<8} {:<8} {}",
        w.id,
        opt(w.slot),
        opt(w.pid),
        w.state.name(),
        w.uptime_seconds.map_or_else(|| "-".into(), human_duration),
        w.restarts,
        opt(w.load.measured.queue_depth),
        cpu,
        w.load
            .measured
            .rss_bytes
            .map_or_else(|| "-".into(), human_bytes),
        conns,
        stall,
        note.join("; ")
    )
}

/// `crashed 5m ago serving GET /api/report (+2): TypeError: x`, cut to fit
/// a terminal: `/status` has the whole of it.
fn crash_note(c: &LastCrash, now: SystemTime) -> String {
    const MAX: usize = 80;
    let ago = humantime::parse_rfc3339_weak(&c.at)
        .ok()
        .and_then(|at| now.duration_since(at).ok())
        .map_or_else(String::new, |d| {
            format!(" {} ago", human_duration(d.as_secs_f64()))
        });
    let mut note = format!("crashed{ago}");
    if let Some(first) = c.requests.first() {
        let _ = write!(note, " serving {first}");
        let others = c.requests.len() - 1 + c.more_requests as usize;
        if others > 0 {
            let _ = write!(note, " (+{others})");
        }
    }
    match (&c.error, c.exit_code, c.signal) {
        (Some(e), _, _) => {
            let _ = write!(note, ": {e}");
        }
        (None, Some(code), _) => {
            let _ = write!(note, ": exit code {code}");
        }
        (None, None, Some(sig)) => {
            let _ = write!(note, ": signal {sig}");
        }
        (None, None, None) => {}
    }
    if note.chars().count() > MAX {
        note = note.chars().take(MAX - 1).collect();
        note.push('…');
    }
    note
}

/// A stall: milliseconds below 10 s, else seconds.
fn human_millis(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.0}s", d.as_secs_f64())
    }
}

/// CPU and connection columns: totals, or rates against `prev`.
fn columns(w: &WorkerStatus, prev: Option<(f64, &WorkerStatus)>) -> (String, String) {
    match prev {
        Some((dt, p)) if dt > 0.0 => {
            let cpu = match (w.load.measured.cpu_time, p.load.measured.cpu_time) {
                (Some(a), Some(b)) => {
                    format!("{:.0}%", a.saturating_sub(b).as_secs_f64() / dt * 100.0)
                }
                _ => "-".into(),
            };
            #[expect(
                clippy::cast_precision_loss,
                reason = "a connection count far below 2^53; the rate is printed rounded"
            )]
            let conns = match (w.load.connections, p.load.connections) {
                (Some(a), Some(b)) => format!("{:.0}", a.saturating_sub(b) as f64 / dt),
                _ => "-".into(),
            };
            (cpu, conns)
        }
        _ => (
            w.load
                .measured
                .cpu_time
                .map_or_else(|| "-".into(), |c| format!("{:.1}s", c.as_secs_f64())),
            opt(w.load.connections),
        ),
    }
}

fn human_duration(secs: f64) -> String {
    // Whole seconds only: humantime would print nanoseconds.
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "clamped to >= 0, and an uptime in seconds fits a u64 (the cast saturates anyway)"
    )]
    let d = Duration::from_secs(secs.max(0.0) as u64);
    let text = humantime::format_duration(d).to_string();
    // "1h 2m 3s" → "1h 2m": two units are enough in a table.
    text.split(' ').take(2).collect::<Vec<_>>().join(" ")
}

fn human_bytes(b: u64) -> String {
    bytesize::ByteSize(b).display().iec().to_string()
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        admin::status::{Load, WorkerState},
        balancer,
    };

    fn status() -> Status {
        Status {
            version: "0.1.0".into(),
            pid: 42,
            uptime_seconds: 3723.0,
            listen: "[::]:3000".into(),
            policy: "rescue".into(),
            workers_configured: 2,
            ready: 1,
            min_ready: 1,
            is_ready: true,
            reloading: false,
            reloads_finished: 0,
            last_reload: None,
            shutting_down: false,
            quarantined: Vec::new(),
            queue_depth_source: Some(QueueSourceKind::SockDiag),
            loop_signal: Some(LoopSignal::Kernel),
            loop_hook: Some(crate::steering::LoopHook::Fentry),
            http_cache: Some(crate::admin::status::CacheStatus {
                store: "local".into(),
                store_up: true,
                hits: 90,
                misses: 10,
                hit_ratio: Some(0.9),
                entries: Some(4),
                bytes: Some(3 * 1024 * 1024),
                max_bytes: Some(32 * 1024 * 1024),
                ..Default::default()
            }),
            workers: vec![
                WorkerStatus {
                    id: 0,
                    slot: Some(0),
                    pid: Some(100),
                    state: WorkerState::Ready,
                    uptime_seconds: Some(61.0),
                    restarts: 0,
                    crash_looping: false,
                    restart_in_seconds: None,
                    replacement: None,
                    last_crash: None,
                    load: Load {
                        measured: balancer::Load {
                            queue_depth: Some(0),
                            cpu_time: Some(Duration::from_secs(2)),
                            rss_bytes: Some(50 << 20),
                            event_loop: Some(balancer::EventLoopLoad {
                                longest_recent_stall: Some(Duration::from_millis(305)),
                                ..balancer::EventLoopLoad::default()
                            }),
                            ..balancer::Load::default()
                        },
                        connections: Some(100),
                        ..Load::default()
                    },
                },
                WorkerStatus {
                    id: 1,
                    slot: None,
                    pid: None,
                    state: WorkerState::Down,
                    uptime_seconds: None,
                    restarts: 3,
                    crash_looping: true,
                    restart_in_seconds: Some(2.5),
                    replacement: None,
                    load: Load::default(),
                    last_crash: Some(LastCrash {
                        at: "2027-01-15T08:00:00.000Z".into(),
                        pid: 99,
                        exit_code: None,
                        signal: Some(9),
                        ..LastCrash::default()
                    }),
                },
            ],
            program: None,
        }
    }

    #[test]
    fn the_status_table_has_a_row_per_worker() {
        let mut held = status();
        held.quarantined = vec![crate::quarantine::guard::Quarantined {
            request: "GET /report?id=7".into(),
            crashes: 2,
            since: "2026-12-08T02:00:00.000Z".into(),
            until: "2026-12-08T02:01:00.000Z".into(),
        }];
        let text = render_status(&held, None);
        assert!(
            text.lines().any(|l| l
                == "quarantined: GET /report?id=7 (in flight on 2 crashes), answered 503 until \
                    2026-12-08T02:01:00.000Z"),
            "{text}"
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("up 1h 2m"), "{text}");
        assert!(lines[1].starts_with("1 of 2 workers ready"), "{text}");
        assert!(
            text.lines().any(|l| l
                == "http cache (local): 90.0% hits (90 hits, 10 misses), 4 entries, 3.0 MiB of \
                    32.0 MiB used, 0 evicted"),
            "{text}"
        );
        // A fleet store: its size is the server's; down, it says so.
        let mut fleet = status();
        if let Some(c) = &mut fleet.http_cache {
            *c = crate::admin::status::CacheStatus {
                store: "redis://cache:6379".into(),
                store_up: false,
                store_errors: 3,
                entries: None,
                bytes: None,
                max_bytes: None,
                ..c.clone()
            };
        }
        let text = render_status(&fleet, None);
        assert!(
            text.lines().any(|l| l
                == "http cache (redis://cache:6379: DOWN, 3 failed calls): 90.0% hits (90 hits, \
                    10 misses)"),
            "{text}"
        );
        let table: Vec<&str> = lines
            .iter()
            .skip_while(|l| !l.starts_with("WORKER"))
            .copied()
            .collect();
        let first = table.iter().find(|l| l.starts_with("0 ")).unwrap();
        assert!(
            first.contains("ready") && first.contains("50.0 MiB") && first.contains("2.0s"),
            "{first}"
        );
        assert!(first.contains(" 305ms"), "{first}");
        assert!(
            text.contains("event loops: turns counted by the kernel (fentry)"),
            "{text}"
        );
        let second = table.iter().find(|l| l.starts_with("1 ")).unwrap();
        assert!(
            second.contains("down") && second.contains("crash loop; restart in 2.5s; crashed"),
            "{second}"
        );
    }

    #[test]
    fn a_crash_note_says_when_what_and_why_in_a_line() {
        let at = humantime::parse_rfc3339("2027-01-15T08:00:00.000Z").unwrap();
        let mut c = LastCrash {
            at: "2027-01-15T08:00:00.000Z".into(),
            exit_code: Some(1),
            reported: true,
            error: Some("TypeError: x is undefined".into()),
            requests: vec!["GET /api/report".into(), "GET /".into()],
            more_requests: 1,
            ..LastCrash::default()
        };
        let now = at + Duration::from_mins(5);
        assert_eq!(
            crash_note(&c, now),
            "crashed 5m ago serving GET /api/report (+2): TypeError: x is undefined"
        );
        c.error = None;
        c.requests.truncate(1);
        c.more_requests = 0;
        assert_eq!(
            crash_note(&c, now),
            "crashed 5m ago serving GET /api/report: exit code 1"
        );
        c.requests = vec![format!("GET /{}", "a".repeat(200))];
        let note = crash_note(&c, now);
        assert!(note.chars().count() == 80 && note.ends_with('…'), "{note}");
        let killed = LastCrash {
            at: "2027-01-15T08:00:00.000Z".into(),
            signal: Some(9),
            ..LastCrash::default()
        };
        assert_eq!(crash_note(&killed, now), "crashed 5m ago: signal 9");
    }

    #[test]
    fn top_shows_rates() {
        let before = status();
        let mut after = status();
        after.workers[0].load.measured.cpu_time = Some(Duration::from_millis(2500));
        after.workers[0].load.connections = Some(150);
        let text = render_status(&after, Some((1.0, &before)));
        let row0 = text
            .lines()
            .skip_while(|l| !l.starts_with("WORKER"))
            .find(|l| l.starts_with("0 "))
            .unwrap();
        assert!(row0.contains("50%") && row0.contains(" 50 "), "{row0}");
    }
}
