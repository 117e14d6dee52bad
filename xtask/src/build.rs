//! Building the agent.
use std::{path::PathBuf, process::Command};

use crate::util;

/// `cargo build --release -p watt-agent`; returns the binary's path.
pub fn release() -> anyhow::Result<()> {
    release_binary().map(|_| ())
}

pub fn release_binary() -> anyhow::Result<PathBuf> {
    util::run(Command::new(env!("CARGO")).current_dir(util::root()).args([
        "build",
        "--release",
        "-p",
        "watt-agent",
    ]))?;
    Ok(util::target_dir().join("release/watt-agent"))
}
