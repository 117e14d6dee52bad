//! watt-agent: runs a Node.js app's workers behind one TCP port and steers
//! every new connection to a worker with an eBPF `SK_REUSEPORT` program.
//!
//! # Theory of operation
//!
//! `run` resolves the settings (`config`: command line, environment, file,
//! defaults), loads the kernel program and starts three parts that talk over
//! channels:
//!
//! - `supervisor`: the workers' lives. Its `lifecycle` is a state machine
//!   without I/O (start, ready, crash, restart with backoff, drain, rolling
//!   replace, shutdown); the supervisor performs what it decides: `spawn`s
//!   processes on their listeners, reaps them, answers operator commands
//!   with the lifecycle's verdict.
//! - `balancer`: a thread of its own that owns the listeners' copies and
//!   the `steering` maps. It measures each worker (`sampler`: readers of
//!   `/proc`, `poll` on the listeners and `sock_diag`), judges health
//!   (`balancer::health`: busy, stuck, over memory), publishes selection
//!   `table`s, rescues the queue of a blocked worker, and reports a worker
//!   to replace as a `HealthReport`.
//! - `admin`: the HTTP admin API (metrics, health, status, commands) on the
//!   supervisor's runtime, reading the views both publish.
//!
//! Below them: `listeners` (one `SO_REUSEPORT` listener per worker slot, all
//! in one reuseport group), `steering` (the kernel program: for each new
//! connection it reads the live table and picks a ready slot; when a
//! listener stops it hands each queued connection to another ready slot),
//! `preflight` (kernel and privilege checks shared with `doctor`), and the
//! ground floor, `ids` and `exit`, which every layer may use. `cli` and
//! `doctor` are the operator commands. No module imports one above it.
pub mod admin;
pub mod balancer;
pub mod cli;
pub mod config;
pub mod cpus;
pub mod doctor;
pub mod exit;
pub mod http_cache;
pub mod ids;
pub mod in_flight;
pub mod keepalive;
pub mod listeners;
pub mod logging;
pub mod preflight;
pub mod quarantine;
pub mod run;
pub mod runtime_dir;
pub mod sampler;
pub mod shared_page;
pub mod steering;
pub mod supervisor;
pub mod table;

/// Workers one agent runs at most: a rolling reload needs a second slot per
/// worker for a moment.
pub const MAX_WORKERS: u32 = watt_common::MAX_SLOTS / 2;

/// `error: cause: cause` on one line, for logs and messages.
#[must_use]
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}
