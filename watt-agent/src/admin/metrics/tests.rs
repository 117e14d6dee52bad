use std::time::Duration;

use super::*;
use crate::{
    balancer::{Load, SlotSnapshot},
    steering::{Counters, ProgramStats},
    supervisor::lifecycle::{Phase, WorkerView},
};

fn sample() -> (Shared, Snapshot) {
    let view = |id, slot| WorkerView {
        id,
        slot,
        pid: slot.map(|s: u32| 100 + i32::try_from(s).unwrap()),
        phase: slot.map(|_| Phase::Ready),
        started: Some(Instant::now()),
        restarts: 2,
        crash_looping: false,
        restart_at: None,
        incoming: None,
    };
    let shared = Shared {
        workers: vec![view(0, Some(0)), view(1, None)],
        ready: 1,
        heartbeat: Some(Instant::now()),
        ..Shared::default()
    };
    let mut snap = Snapshot {
        counters: Some(Counters {
            slots: vec![watt_common::SlotCounters::default(); 2],
            new_connections: 10,
            ..Counters::default()
        }),
        program: Some(ProgramStats {
            run_time: Duration::from_micros(3),
            run_count: 10,
        }),
        ticks: 4,
        tick_time: Duration::from_micros(40),
        loop_signal: crate::config::LoopSignal::Proc,
        ..Snapshot::default()
    };
    snap.slots.insert(
        0,
        SlotSnapshot {
            load: Load {
                cpu_time: Some(Duration::from_millis(250)),
                rss_bytes: Some(50 << 20),
                queue_depth: Some(1),
                event_loop: Some(crate::balancer::EventLoopLoad {
                    turns: 7,
                    stall_buckets: vec![5, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0],
                    stall_total: Some(Duration::from_millis(250)),
                    longest_recent_stall: Some(Duration::from_millis(200)),
                    current_stall: None,
                }),
                ..Load::default()
            },
            ..SlotSnapshot::default()
        },
    );
    (shared, snap)
}

#[test]
fn the_text_follows_the_naming_conventions() {
    let (shared, snap) = sample();
    let cache = status::CacheStatus {
        hits: 3,
        misses: 1,
        bytes: Some(2048),
        entries: Some(0),
        ..status::CacheStatus::default()
    };
    let text = encode(
        &status::tests::info(),
        &shared,
        &snap,
        Some(cache),
        Instant::now(),
        false,
    )
    .unwrap();
    for line in [
        "# TYPE watt_worker_restarts_total counter",
        "watt_worker_restarts_total{worker=\"0\"} 2",
        "watt_worker_state{worker=\"1\",state=\"down\"} 1",
        "watt_worker_state{worker=\"0\",state=\"ready\"} 1",
        "watt_worker_cpu_seconds_total{worker=\"0\",slot=\"0\"} 0.25",
        "watt_worker_resident_memory_bytes{worker=\"0\",slot=\"0\"} 52428800",
        "watt_worker_accept_queue_depth{worker=\"0\",slot=\"0\"} 1",
        "watt_worker_connections_total{worker=\"0\",slot=\"0\"} 0",
        "watt_program_connections_total 10",
        "watt_program_runs_total 10",
        "watt_program_run_time_seconds_total 0.000003",
        "watt_sampler_tick_duration_seconds_total 0.00004",
        "watt_workers_ready 1",
        "# TYPE watt_worker_event_loop_stall_seconds histogram",
        "watt_worker_event_loop_stall_seconds_bucket{worker=\"0\",slot=\"0\",le=\"0.001\"} 5",
        "watt_worker_event_loop_stall_seconds_bucket{worker=\"0\",slot=\"0\",le=\"0.002\"} 6",
        "watt_worker_event_loop_stall_seconds_bucket{worker=\"0\",slot=\"0\",le=\"0.25\"} 7",
        "watt_worker_event_loop_stall_seconds_bucket{worker=\"0\",slot=\"0\",le=\"+Inf\"} 7",
        "watt_worker_event_loop_stall_seconds_count{worker=\"0\",slot=\"0\"} 7",
        "watt_worker_event_loop_stall_seconds_sum{worker=\"0\",slot=\"0\"} 0.25",
        "watt_worker_event_loop_longest_recent_stall_seconds{worker=\"0\",slot=\"0\"} 0.2",
        "watt_worker_event_loop_turns_total{worker=\"0\",slot=\"0\"} 7",
        "watt_loop_signal{signal=\"proc\",hook=\"\"} 1",
        "watt_http_cache_hits_total 3",
        "watt_http_cache_misses_total 1",
        "watt_http_cache_stores_total 0",
        "watt_http_cache_evictions_total 0",
        "watt_http_cache_size_bytes 2048",
        "watt_http_cache_entries 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    // Worker 1 has no process: no per-process series for it.
    assert!(!text.contains("watt_worker_cpu_seconds_total{worker=\"1\""));
    // Every family: the watt_ prefix, HELP and TYPE, counters in _total,
    // units in the name (seconds, bytes) as Prometheus names them.
    let families: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    assert!(families.len() >= 20, "{text}");
    for (name, kind) in &families {
        assert!(name.starts_with("watt_"), "{name}");
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no HELP"
        );
        if *kind == "counter" {
            assert!(name.ends_with("_total"), "counter {name} without _total");
        }
        assert!(!name.contains("_ms") && !name.contains("_kib"), "{name}");
    }
    let open = encode(
        &status::tests::info(),
        &shared,
        &snap,
        None,
        Instant::now(),
        true,
    )
    .unwrap();
    assert!(open.ends_with("# EOF\n"), "{open}");
}
