//! Exit codes of `watt-agent` (also in the README): one home for `run`,
//! the supervisor's shutdown, the operator commands and `doctor`.

/// Clean shutdown: every worker stopped within the kill timeout.
pub const OK: i32 = 0;
/// A runtime failure (the admin API could not start, an I/O error, or an
/// operator command the agent refused).
pub const FAILURE: i32 = 1;
/// Bad command line or config file.
pub const USAGE: i32 = 2;
/// The machine cannot run it: privileges, kernel, port in use, command
/// not found.
pub const ENVIRONMENT: i32 = 3;
/// Shutdown needed SIGKILL for some worker (timeout or second signal).
pub const FORCED: i32 = 4;
