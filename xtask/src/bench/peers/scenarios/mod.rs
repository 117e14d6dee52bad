//! The scenarios (scenario.rs), what one run of a scenario against one arm
//! (a cell) records (record.rs), and running a cell (cell.rs).
mod cell;
mod crashes;
mod front;
mod record;
mod scenario;

pub use cell::{CellEnv, run_cell};
pub use front::Front;
#[cfg(test)]
pub use record::CrashStats;
pub use record::{CURVE, Cell};
pub use scenario::{NEXT_SAT_RATE, Scenario, Settings};
