//! watt-agent: runs a Node.js app's workers behind one TCP port and steers
//! every new connection to a worker with an eBPF `SK_REUSEPORT` program.
//!
//! # Theory of operation
//!
//! - `listeners`: one `SO_REUSEPORT` listener per worker slot, all in one
//!   reuseport group. The agent keeps its own copy of each.
//! - `steering`: the kernel program and its maps. For each new connection the
//!   program reads the live selection table and picks a ready slot; when a
//!   listener stops (worker crash, drain, or a queue rescue) the same program
//!   hands each queued connection to another ready slot.
//! - `table`: pure functions building selection tables from slot weights.
//! - `preflight`: kernel and privilege checks shared with `doctor`.
//! - `admin`: the HTTP admin API (metrics, health, status, commands) and its
//!   client; `cli` and `doctor`: the operator commands.
pub mod admin;
pub mod balancer;
pub mod cli;
pub mod config;
pub mod cpus;
pub mod doctor;
pub mod exit;
pub mod ids;
pub mod listeners;
pub mod logging;
pub mod preflight;
pub mod run;
pub mod runtime_dir;
pub mod sampler;
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
