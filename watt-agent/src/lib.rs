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
pub mod listeners;
pub mod preflight;
pub mod steering;
pub mod table;
