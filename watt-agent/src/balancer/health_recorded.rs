//! The health model replayed on sample sequences the agent really took:
//! `recorded/*.txt`, written by `cargo run -p watt-tests --example
//! record_samples` from the agent's `watt_agent::samples` trace (each file's
//! header says how). The model is a pure function of the samples, so the
//! replay must give, sample by sample, the verdicts the live agent gave.
use std::{collections::BTreeMap, time::Duration};

use super::{Health, Params, Sample, Tracker};
use crate::config::defaults;

/// One recorded sample and the verdict the live agent gave.
struct Row {
    ms: f64,
    slot: u32,
    sample: Sample,
    live_busy: bool,
}

fn flag(s: &str) -> Option<bool> {
    match s {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

fn parse(text: &str) -> Vec<Row> {
    let base = std::time::Instant::now();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Recordings since the kernel's turn count have a 7th column,
            // since keep-alive release an 8th (stalled).
            assert!(matches!(f.len(), 6..=8), "bad line: {l}");
            let ms: f64 = f[0].parse().expect("ms");
            Row {
                ms,
                slot: f[1].parse().expect("slot"),
                sample: Sample {
                    at: base + Duration::from_secs_f64(ms / 1000.0),
                    queue_nonempty: f[2] == "1",
                    loop_idle: flag(f[3]),
                    progress: flag(f[4]),
                    turned: f.get(6).and_then(|t| flag(t)),
                    stalled: f.get(7) == Some(&"1"),
                    peers_working: false,
                    rss: None,
                },
                live_busy: f[5] == "1",
            }
        })
        .collect()
}

/// The agent's default parameters (what the recordings ran with).
fn params() -> Params {
    Params {
        rescue_after: defaults::RESCUE_AFTER,
        stuck_after: defaults::STUCK_AFTER,
        max_memory: None,
        probation: super::PROBATION,
    }
}

/// Per slot, in order: (ms, replayed verdict is busy, live verdict was busy).
fn replay(rows: &[Row]) -> BTreeMap<u32, Vec<(f64, bool, bool)>> {
    let mut trackers: BTreeMap<u32, Tracker> = BTreeMap::new();
    let mut out: BTreeMap<u32, Vec<(f64, bool, bool)>> = BTreeMap::new();
    for r in rows {
        let v = trackers
            .entry(r.slot)
            .or_default()
            .observe(r.sample, &params());
        let busy = !matches!(v.health, Health::Ready);
        out.entry(r.slot)
            .or_default()
            .push((r.ms, busy, r.live_busy));
    }
    out
}

/// Busy episodes of one slot: (start ms, length ms); an episode still open
/// at the end runs to the last sample.
fn episodes(samples: &[(f64, bool, bool)]) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut start = None;
    for &(ms, busy, _) in samples {
        match (busy, start) {
            (true, None) => start = Some(ms),
            (false, Some(s)) => {
                out.push((s, ms - s));
                start = None;
            }
            _ => {}
        }
    }
    if let (Some(s), Some(&(last, _, _))) = (start, samples.last()) {
        out.push((s, last - s));
    }
    out
}

const BLOCKED: &str = include_str!("recorded/blocked.txt");
const LOADED: &str = include_str!("recorded/loaded.txt");
/// The same scenarios with the kernel's count of event-loop turns.
const BLOCKED_KERNEL: &str = include_str!("recorded/blocked-kernel.txt");
const LOADED_KERNEL: &str = include_str!("recorded/loaded-kernel.txt");

#[test]
fn the_replay_gives_the_verdicts_the_live_agent_gave() {
    for (name, text) in [
        ("blocked", BLOCKED),
        ("loaded", LOADED),
        ("blocked-kernel", BLOCKED_KERNEL),
        ("loaded-kernel", LOADED_KERNEL),
    ] {
        let rows = parse(text);
        assert!(rows.len() > 300, "{name}: only {} samples", rows.len());
        for (slot, samples) in replay(&rows) {
            for (ms, replayed, live) in samples {
                assert_eq!(replayed, live, "{name}: slot {slot} at {ms} ms");
            }
        }
    }
}

#[test]
fn recorded_block_is_busy_for_the_block_and_no_one_else_is() {
    let victim: u32 = BLOCKED
        .lines()
        .find_map(|l| {
            l.strip_prefix("# The worker in slot ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .expect("the header names the blocked slot");
    let rows = parse(BLOCKED);
    let replayed = replay(&rows);
    // Busy from the second tick its queue waited while its loop was
    // blocked (default rescue_after = 2), for the 1 s block, once.
    let eps = episodes(&replayed[&victim]);
    assert_eq!(eps.len(), 1, "{eps:?}");
    let (start, length) = eps[0];
    assert!((900.0..=1100.0).contains(&length), "busy for {length} ms");
    let first_wait = rows
        .iter()
        .find(|r| {
            r.slot == victim
                && r.ms > 500.0
                && r.sample.queue_nonempty
                && r.sample.loop_idle == Some(false)
        })
        .expect("the victim's queue waited while it was blocked");
    let ticks_to_busy = rows
        .iter()
        .filter(|r| r.slot == victim && r.ms >= first_wait.ms && r.ms <= start)
        .count();
    assert_eq!(ticks_to_busy, defaults::RESCUE_AFTER as usize);
    // The healthy workers serving the same load: never out of the table
    // once warmed up (the first requests compile the app's code).
    for (slot, samples) in &replayed {
        if *slot != victim {
            let late: Vec<_> = episodes(samples)
                .into_iter()
                .filter(|e| e.0 > 100.0)
                .collect();
            assert!(late.is_empty(), "slot {slot}: {late:?}");
        }
    }
}

#[test]
fn recorded_healthy_workers_under_heavy_load_leave_the_table_only_briefly() {
    // 2500 new connections/s on 2 cores shared with the load generator: a
    // worker waiting for a CPU with connections queued is not accepting
    // either, and counts as busy for a tick or two (its queue goes to
    // others); it must come back as soon as it runs again.
    let replayed = replay(&parse(LOADED));
    for (slot, samples) in &replayed {
        let eps = episodes(samples);
        let longest = eps.iter().map(|e| e.1).fold(0.0, f64::max);
        assert!(longest <= 20.0, "slot {slot}: busy for {longest} ms");
        let busy = samples.iter().filter(|s| s.1).count();
        assert!(
            busy * 10 < samples.len(),
            "slot {slot}: busy in {busy} of {} samples",
            samples.len()
        );
    }
}

/// Time out of the table per slot, as a fraction of the recording.
fn busy_fraction(samples: &[(f64, bool, bool)], span: f64) -> f64 {
    episodes(samples).iter().map(|e| e.1).sum::<f64>() / span
}

#[test]
fn with_the_kernel_signal_healthy_workers_under_full_load_stay_in_the_table() {
    // 2500 new connections/s on 2 cores shared with the load generator,
    // the kernel counting turns: a healthy worker is out of the table for
    // less than 1% of the time.
    let rows = parse(LOADED_KERNEL);
    assert!(
        rows.iter()
            .all(|r| r.sample.turned.is_some() || !r.sample.queue_nonempty)
    );
    let span = rows.last().unwrap().ms - rows[0].ms;
    for (slot, samples) in replay(&rows) {
        let f = busy_fraction(&samples, span);
        assert!(
            f < 0.01,
            "slot {slot}: out of the table {:.2}% of the time",
            f * 100.0
        );
    }
}

#[test]
fn with_the_kernel_signal_the_blocked_worker_is_busy_for_its_block() {
    let rows = parse(BLOCKED_KERNEL);
    let span = rows.last().unwrap().ms - rows[0].ms;
    let replayed = replay(&rows);
    let mut blocked = 0;
    for (slot, samples) in &replayed {
        let eps = episodes(samples);
        let longest = eps.iter().map(|e| e.1).fold(0.0, f64::max);
        if longest > 500.0 {
            // The 1 s block: busy once, for about its length.
            blocked += 1;
            assert_eq!(eps.len(), 1, "slot {slot}: {eps:?}");
            assert!(
                (900.0..=1100.0).contains(&longest),
                "slot {slot}: {longest} ms"
            );
        } else {
            assert!(busy_fraction(samples, span) < 0.01, "slot {slot}: {eps:?}");
        }
    }
    assert_eq!(blocked, 1, "exactly one worker blocked");
}
