//! The vocabulary of the lifecycle machine: what it is told (`Event`), what
//! it asks for (`Action`), what it reports (`Note`), and the phases of an
//! instance with the transitions allowed between them.
use std::time::{Duration, Instant};

use watt_common::SlotState;

use crate::ids::{Pid, Slot, WorkerId};

/// Phase of one instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The driver is forking it.
    Spawning,
    /// Running, not yet accepting: its slot receives no new connections.
    Starting,
    /// Accepting connections.
    Ready,
    /// Told to stop; finishing what it has.
    Draining,
}

/// Allowed transitions (target, from). Anything else is a bug and logged.
const ALLOWED: &[(Phase, &[Phase])] = &[
    (Phase::Starting, &[Phase::Spawning]),
    (Phase::Ready, &[Phase::Starting]),
    (
        Phase::Draining,
        &[Phase::Spawning, Phase::Starting, Phase::Ready],
    ),
];

pub(super) fn allowed(from: Phase, to: Phase) -> bool {
    ALLOWED
        .iter()
        .any(|(target, froms)| *target == to && froms.contains(&from))
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Code(c) => write!(f, "exit code {c}"),
            Self::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// Why an instance is being replaced while it still serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplaceReason {
    /// Rolling reload of all workers.
    Reload,
    /// An operator asked for this worker.
    Restart,
    /// Its event loop did not accept for longer than `--stuck-after`.
    Stuck,
    /// Its memory passed `--max-memory`.
    OverMemory,
}

/// Signals the machine sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Sig {
    /// To the worker process: a graceful stop.
    Term,
    /// To the worker's whole process group.
    Kill,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Start the initial workers.
    Start,
    /// Time passed; deadlines may have expired.
    Tick,
    Spawned {
        slot: Slot,
        pid: Pid,
    },
    SpawnFailed {
        slot: Slot,
        reason: String,
    },
    /// The worker said `READY=1`.
    Ready {
        pid: Pid,
    },
    Exited {
        pid: Pid,
        status: ExitStatus,
    },
    Reload,
    /// Replace `worker` gracefully; `pid`: only if that process still
    /// serves it (a health verdict), `None`: whatever serves it (an
    /// operator's restart).
    Replace {
        worker: WorkerId,
        pid: Option<Pid>,
        reason: ReplaceReason,
    },
    /// SIGTERM/SIGINT: the first drains, a second one SIGKILLs everything.
    Shutdown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create the slot's listener and put it in the group, state `Starting`.
    OpenSlot {
        slot: Slot,
    },
    /// Start worker `worker` on `slot`'s listener; answer with `Spawned` or
    /// `SpawnFailed`.
    Spawn {
        slot: Slot,
        worker: WorkerId,
    },
    /// Set the slot's state in the kernel map.
    SetState {
        slot: Slot,
        state: SlotState,
    },
    /// Stop the slot's listener and leave it stopped: its queued connections
    /// migrate. Only once no process accepts on it any more (a live worker
    /// would spin on a stopped listener: libuv retries `accept` on EINVAL).
    StopSlot {
        slot: Slot,
    },
    /// Close the slot's listener; the slot is free again.
    CloseSlot {
        slot: Slot,
    },
    Signal {
        pid: Pid,
        sig: Sig,
    },
    /// Something worth one log line.
    Note(Note),
    /// Every worker is gone after a shutdown: exit with this code.
    Exit {
        code: i32,
    },
}

/// What happened, for the log (one line each) and for metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    Started {
        worker: WorkerId,
        slot: Slot,
        pid: Pid,
    },
    Ready {
        worker: WorkerId,
        pid: Pid,
        after: Duration,
    },
    Crashed {
        worker: WorkerId,
        pid: Pid,
        status: ExitStatus,
        uptime: Duration,
        phase: Phase,
    },
    NotReady {
        worker: WorkerId,
        pid: Pid,
        timeout: Duration,
    },
    SpawnFailed {
        worker: WorkerId,
        reason: String,
    },
    RestartIn {
        worker: WorkerId,
        delay: Duration,
    },
    CrashLoop {
        worker: WorkerId,
        crashes: usize,
        window: Duration,
    },
    Draining {
        worker: WorkerId,
        pid: Pid,
        reason: DrainReason,
    },
    Stopped {
        worker: WorkerId,
        pid: Pid,
        status: ExitStatus,
    },
    Killed {
        worker: WorkerId,
        pid: Pid,
    },
    ReplaceFailed {
        worker: WorkerId,
        reason: ReplaceReason,
    },
    ReloadStarted {
        workers: usize,
    },
    /// Every worker was replaced (or failed to be) and every old instance
    /// the reload drained has exited.
    ReloadFinished {
        replaced: usize,
        failed: usize,
    },
    Illegal {
        worker: WorkerId,
        from: Phase,
        to: Phase,
    },
    /// A `Reload` or `Replace` the machine did not act on, and why.
    Refused(Refused),
    /// No worker was ever ready and each failed its first `attempts`
    /// starts: the agent stops with `exit::FAILURE`.
    NeverReady {
        attempts: u32,
    },
}

/// Why the machine did not act on a `Reload` or `Replace`: its answer to
/// an operator's command (409, or 404 for no such worker), and a log line
/// for one from SIGHUP or the balancer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the agent is shutting down")]
    ShuttingDown,
    #[error("a rolling reload is already running")]
    Reloading,
    #[error("no worker {worker}: the workers are 0..{last}")]
    NoSuchWorker { worker: WorkerId, last: WorkerId },
    #[error("worker {worker} is already being replaced")]
    BeingReplaced { worker: WorkerId },
    #[error("worker {worker} is not running (its restart is pending)")]
    NotRunning { worker: WorkerId },
    #[error("worker {worker} is stopping")]
    Stopping { worker: WorkerId },
    /// A health verdict about a process that no longer serves its worker.
    #[error("worker {worker}: process {pid} no longer serves it")]
    NotServing { worker: WorkerId, pid: Pid },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainReason {
    Replaced(ReplaceReason),
    Shutdown,
}

/// A read-only view of one worker, for status and metrics.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WorkerView {
    pub id: WorkerId,
    pub slot: Option<Slot>,
    pub pid: Option<Pid>,
    pub phase: Option<Phase>,
    #[serde(skip)]
    pub started: Option<Instant>,
    pub restarts: u32,
    pub crash_looping: bool,
    #[serde(skip)]
    pub restart_at: Option<Instant>,
    /// Slot and pid of a replacement being started.
    pub incoming: Option<(Slot, Option<Pid>)>,
}
