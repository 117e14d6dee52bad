//! The settings of `watt-agent run`, resolved from three layers:
//! command line and environment (`WATT_*`, through clap), the TOML file
//! (`--config`), then defaults. Each layer is a [`Layer`] of optional values;
//! [`resolve`] takes the first value set, in that order, and validates it.
//!
//! Every setting is one row of the table in `settings.rs`; the command
//! line's options, [`Layer`], [`RunConfig`], picking, the file's keys and
//! `check-config`'s output are generated from it.

mod settings;

pub mod args;
pub mod defaults;
pub mod file;
pub mod http_cache;
mod layer;
mod render;
mod resolve;
mod sources;
mod to_toml;
pub mod values;

pub use layer::{Layer, RunConfig, entries};
pub use render::describe;
pub use resolve::{ConfigError, resolve};
pub use sources::{LoadError, Origin, Sources, load};
pub use values::{AdminAddr, LogFormat, LoopSignal, MemorySize, Policy, Workers};
