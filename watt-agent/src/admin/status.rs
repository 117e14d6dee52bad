//! `/status`: every worker's slot, pid, state, uptime, restarts and load, as
//! JSON. The same types are read back by `watt-agent status` and `top`.
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use watt_common::SlotState;

use super::info::Info;
use crate::{
    balancer::{self, SlotSnapshot, Snapshot},
    config::LoopSignal,
    quarantine::guard::Quarantined,
    sampler::QueueSourceKind,
    steering::{LoopHook, ProgramMode},
    supervisor::{
        ReloadOutcome, Shared,
        crashes::LastCrash,
        lifecycle::{Phase, WorkerView},
    },
};

/// What a worker is doing, as the API and the metrics name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkerState {
    /// Started, not yet ready: receives no new connections.
    Starting,
    /// Accepting connections.
    Ready,
    /// Ready, but its accept queue is not draining: taken out of steering
    /// for now (`--policy rescue`).
    Busy,
    /// Told to stop; finishing what it has.
    Draining,
    /// No process: crashed and waiting for its restart, or stopped.
    Down,
}

impl WorkerState {
    pub const ALL: [Self; 5] = [
        Self::Starting,
        Self::Ready,
        Self::Busy,
        Self::Draining,
        Self::Down,
    ];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Busy => "busy",
            Self::Draining => "draining",
            Self::Down => "down",
        }
    }

    /// The state of `view`, refined by what the balancer sees of its slot.
    #[must_use]
    pub fn of(view: &WorkerView, slot: Option<&SlotSnapshot>) -> Self {
        match view.phase {
            None => Self::Down,
            Some(Phase::Spawning | Phase::Starting) => Self::Starting,
            Some(Phase::Draining) => Self::Draining,
            Some(Phase::Ready) => {
                if slot.and_then(|s| s.state) == Some(SlotState::Busy) {
                    Self::Busy
                } else {
                    Self::Ready
                }
            }
        }
    }
}

impl std::fmt::Display for WorkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The answer of `GET /status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    /// The agent's pid.
    pub pid: u32,
    pub uptime_seconds: f64,
    pub listen: String,
    pub policy: String,
    /// Workers the agent runs (`--workers`, resolved).
    pub workers_configured: usize,
    /// Workers ready now.
    pub ready: usize,
    pub min_ready: u32,
    /// What `/readyz` answers: at least `min_ready` ready, not shutting down.
    pub is_ready: bool,
    pub reloading: bool,
    /// Rolling reloads finished since the agent started.
    #[serde(default)]
    pub reloads_finished: u64,
    /// How the last finished reload went.
    #[serde(default)]
    pub last_reload: Option<ReloadOutcome>,
    pub shutting_down: bool,
    pub workers: Vec<WorkerStatus>,
    /// Requests every worker refuses (503) because they kept crashing
    /// workers (`quarantine_for`).
    #[serde(default)]
    pub quarantined: Vec<Quarantined>,
    /// The eBPF program's totals (absent under `--policy kernel`).
    pub program: Option<ProgramStatus>,
    /// Where accept-queue depths come from: `sock_diag`, `proc_net_tcp`, or
    /// absent when neither works.
    #[serde(default)]
    pub queue_depth_source: Option<QueueSourceKind>,
    /// What tells the health model that a worker's event loop turns:
    /// `kernel` (its epoll waits counted) or `proc` (the fallback).
    #[serde(default)]
    pub loop_signal: Option<LoopSignal>,
    /// How the kernel's count hooks the wait: `fentry` or
    /// `tracepoint` (absent with `proc`).
    #[serde(default)]
    pub loop_hook: Option<LoopHook>,
    /// The shared HTTP cache (absent when it is off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_cache: Option<CacheStatus>,
}

/// The shared HTTP cache's store, as `status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheStatus {
    /// `local` (the agent's memory), or the fleet store's URL.
    pub store: String,
    /// Whether the store answers (a fleet store can go away).
    pub store_up: bool,
    /// Calls to the fleet store that failed or timed out.
    pub store_errors: u64,
    /// Responses stored, their bytes, and `max_size`: only the local store
    /// knows them (a fleet store is the server's to size).
    pub entries: Option<u64>,
    pub bytes: Option<u64>,
    pub max_bytes: Option<u64>,
    pub hits: u64,
    pub misses: u64,
    /// hits / (hits + misses), absent before the first lookup.
    pub hit_ratio: Option<f64>,
    pub stores: u64,
    pub evictions: u64,
    pub invalidations: u64,
    pub too_large: u64,
}

impl CacheStatus {
    #[must_use]
    pub fn of(view: &crate::http_cache::View) -> Self {
        let s = view.stats();
        let lookups = s.hits + s.misses;
        #[expect(clippy::cast_precision_loss, reason = "a ratio")]
        let hit_ratio = (lookups > 0).then(|| s.hits as f64 / lookups as f64);
        let local = view.backend.is_local();
        Self {
            store: view.backend.name(),
            store_up: view.backend.is_up(),
            store_errors: view.backend.errors(),
            entries: local.then_some(s.entries),
            bytes: local.then_some(s.bytes),
            max_bytes: local.then_some(view.settings.limits.max_size),
            hits: s.hits,
            misses: s.misses,
            hit_ratio,
            stores: s.stores,
            evictions: s.evictions,
            invalidations: s.invalidations,
            too_large: s.too_large,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Stable id `0..N` (`WATT_WORKER_ID`).
    pub id: u32,
    /// Its listener's slot in the reuseport group (changes on restart).
    pub slot: Option<u32>,
    pub pid: Option<i32>,
    pub state: WorkerState,
    /// Time since this process started.
    pub uptime_seconds: Option<f64>,
    /// Restarts after crashes since the agent started.
    pub restarts: u32,
    pub crash_looping: bool,
    /// When down: the restart is due in this many seconds.
    pub restart_in_seconds: Option<f64>,
    /// A replacement being started (reload, restart, memory, stuck).
    pub replacement: Option<Replacement>,
    pub load: Load,
    /// Its last crash (kept until the next one): when, how it exited, and
    /// what it was serving, as the worker reported it.
    #[serde(default)]
    pub last_crash: Option<LastCrash>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replacement {
    pub slot: u32,
    pub pid: Option<i32>,
}

/// A worker's slot as the balancer measured it (its own struct, as is) and
/// as the program counted it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    #[serde(flatten)]
    pub measured: balancer::Load,
    /// New connections the program steered to its slot (counted per slot
    /// since the agent started).
    pub connections: Option<u64>,
    /// Queued connections migrated into its slot from a stopped listener.
    pub migrated_in: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProgramStatus {
    /// `select-or-migrate`, or `select-only` on kernels before 5.14 (no
    /// lossless crash and drain, no queue rescue).
    #[serde(default)]
    pub mode: ProgramMode,
    pub connections: u64,
    pub migrations: u64,
    /// Connections left to the kernel's own choice (no usable table entry).
    pub fallbacks: u64,
    /// Connections that arrived while no slot was ready.
    pub no_ready_slot: u64,
    pub select_errors: u64,
    /// Run time and runs of the program, with `--bpf-stats`.
    pub run_time_seconds: Option<f64>,
    pub runs: Option<u64>,
}

/// Builds the status from the supervisor's and the balancer's views.
#[must_use]
pub fn build(info: &Info, shared: &Shared, snap: &Snapshot, now: Instant) -> Status {
    let since = |t: Option<Instant>| t.map(|t| millis(now.saturating_duration_since(t)));
    let workers = shared
        .workers
        .iter()
        .map(|w| {
            let slot = w.slot.and_then(|s| snap.slots.get(&s));
            let counters = w
                .slot
                .and_then(|s| snap.counters.as_ref()?.slots.get(s as usize));
            WorkerStatus {
                id: w.id,
                slot: w.slot,
                pid: w.pid,
                state: WorkerState::of(w, slot),
                uptime_seconds: since(w.started),
                restarts: w.restarts,
                crash_looping: w.crash_looping,
                restart_in_seconds: w
                    .restart_at
                    .filter(|_| w.phase.is_none())
                    .map(|t| millis(t.saturating_duration_since(now))),
                replacement: w.incoming.map(|(slot, pid)| Replacement { slot, pid }),
                load: Load {
                    measured: slot.map(|s| s.load.clone()).unwrap_or_default(),
                    connections: counters.map(|c| c.selected),
                    migrated_in: counters.map(|c| c.migrated_in),
                },
                last_crash: shared.last_crashes.get(&w.id).cloned(),
            }
        })
        .collect();
    // Run time is only counted while BPF stats are on (ours, or enabled
    // system-wide by someone else).
    let stats = snap.program.filter(|p| info.bpf_stats || p.run_count > 0);
    let program = snap.counters.as_ref().map(|c| ProgramStatus {
        mode: snap.program_mode.unwrap_or_default(),
        connections: c.new_connections,
        migrations: c.migrations,
        fallbacks: c.fallback,
        no_ready_slot: c.no_ready_slot,
        select_errors: c.select_errors,
        run_time_seconds: stats.map(|p| p.run_time.as_secs_f64()),
        runs: stats.map(|p| p.run_count),
    });
    Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        uptime_seconds: since(Some(info.started)).unwrap_or_default(),
        listen: info.listen.to_string(),
        policy: info.policy.to_string(),
        workers_configured: shared.workers.len(),
        ready: shared.ready,
        min_ready: info.min_ready,
        is_ready: is_ready(info, shared),
        reloading: shared.reloading,
        reloads_finished: shared.reloads_finished,
        last_reload: shared.last_reload,
        shutting_down: shared.shutting_down,
        quarantined: shared.quarantined.clone(),
        workers,
        program,
        queue_depth_source: snap.queue_source,
        loop_signal: Some(snap.loop_signal),
        loop_hook: snap.loop_hook,
        http_cache: None,
    }
}

/// Seconds, rounded to the millisecond (readable JSON).
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// `/readyz`: enough workers ready and not shutting down.
#[must_use]
pub fn is_ready(info: &Info, shared: &Shared) -> bool {
    !shared.shutting_down && shared.ready >= info.min_ready as usize
}

/// `/healthz`: the supervisor loop went round recently.
#[must_use]
pub fn is_alive(shared: &Shared, now: Instant) -> bool {
    /// The loop refreshes its heartbeat at least every second.
    const STALE: Duration = Duration::from_secs(5);
    shared
        .heartbeat
        .is_some_and(|t| now.saturating_duration_since(t) < STALE)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::{config::Policy, steering::Counters};

    pub(crate) fn info() -> Info {
        Info {
            policy: Policy::Rescue,
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            min_ready: 2,
            bpf_stats: true,
            started: Instant::now(),
        }
    }

    fn view(id: u32, slot: Option<u32>, phase: Option<Phase>) -> WorkerView {
        WorkerView {
            id,
            slot,
            pid: slot.map(|s| 1000 + i32::try_from(s).unwrap()),
            phase,
            started: Some(Instant::now()),
            restarts: id,
            crash_looping: false,
            restart_at: None,
            incoming: None,
        }
    }

    #[test]
    fn states_combine_the_lifecycle_and_the_balancer() {
        let busy = SlotSnapshot {
            state: Some(SlotState::Busy),
            ..SlotSnapshot::default()
        };
        let ready = view(0, Some(0), Some(Phase::Ready));
        assert_eq!(WorkerState::of(&ready, None), WorkerState::Ready);
        assert_eq!(WorkerState::of(&ready, Some(&busy)), WorkerState::Busy);
        let spawning = view(0, Some(0), Some(Phase::Spawning));
        assert_eq!(WorkerState::of(&spawning, None), WorkerState::Starting);
        assert_eq!(
            WorkerState::of(&view(0, None, None), None),
            WorkerState::Down
        );
    }

    #[test]
    fn status_has_every_worker_with_its_load() {
        let mut shared = Shared {
            workers: vec![view(0, Some(0), Some(Phase::Ready)), view(1, None, None)],
            ready: 1,
            heartbeat: Some(Instant::now()),
            ..Shared::default()
        };
        shared.workers[1].restart_at = Some(Instant::now() + Duration::from_secs(3));
        shared.last_crashes.insert(
            1,
            LastCrash {
                pid: 1001,
                exit_code: Some(1),
                reported: true,
                requests: vec!["GET /crash".into()],
                ..LastCrash::default()
            },
        );
        let mut counters = Counters {
            slots: vec![watt_common::SlotCounters::default(); 4],
            new_connections: 7,
            ..Counters::default()
        };
        counters.slots[0].selected = 5;
        let mut snap = Snapshot {
            counters: Some(counters),
            ..Snapshot::default()
        };
        snap.slots.insert(
            0,
            SlotSnapshot {
                load: balancer::Load {
                    queue_depth: Some(3),
                    rss_bytes: Some(1 << 20),
                    cpu_time: Some(Duration::from_millis(1500)),
                    ..balancer::Load::default()
                },
                ..SlotSnapshot::default()
            },
        );
        let s = build(&info(), &shared, &snap, Instant::now());
        assert_eq!(s.workers.len(), 2);
        assert!(!s.is_ready, "1 ready < min_ready 2");
        let w0 = &s.workers[0];
        assert_eq!(
            (w0.slot, w0.pid, w0.state),
            (Some(0), Some(1000), WorkerState::Ready)
        );
        assert_eq!(w0.load.measured.queue_depth, Some(3));
        assert_eq!(w0.load.measured.cpu_time, Some(Duration::from_millis(1500)));
        assert_eq!(w0.load.connections, Some(5));
        let w1 = &s.workers[1];
        assert_eq!(w1.state, WorkerState::Down);
        assert!(w1.restart_in_seconds.is_some_and(|t| t > 2.0 && t <= 3.0));
        assert_eq!(s.program.as_ref().map(|p| p.connections), Some(7));
        // The JSON reads back.
        let json = serde_json::to_string(&s).unwrap();
        let back: Status = serde_json::from_str(&json).unwrap();
        assert_eq!(back.workers[0].load, s.workers[0].load);
        assert_eq!(back.workers[1].state, WorkerState::Down);
        assert!(json.contains("\"state\":\"down\""), "{json}");
        assert!(json.contains("\"last_crash\":null"), "{json}");
        assert_eq!(back.workers[1].last_crash, s.workers[1].last_crash);
        assert_eq!(
            back.workers[1]
                .last_crash
                .as_ref()
                .map(|c| c.requests.clone()),
            Some(vec!["GET /crash".to_owned()])
        );
    }

    #[test]
    fn health_needs_a_recent_heartbeat() {
        let now = Instant::now();
        let mut shared = Shared::default();
        assert!(!is_alive(&shared, now));
        shared.heartbeat = Some(now);
        assert!(is_alive(&shared, now + Duration::from_secs(1)));
        assert!(!is_alive(&shared, now + Duration::from_secs(10)));
    }
}
