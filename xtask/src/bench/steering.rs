//! `cargo xtask bench steering`: runs the steering benchmark program (it
//! needs root: it loads the eBPF program and enables BPF stats).
use std::process::Command;

use crate::{setup, util};

pub fn run() -> anyhow::Result<()> {
    setup::run(&setup::Options::default())?;
    let root = util::root();
    util::run(Command::new(env!("CARGO")).current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "watt-tests",
        "--example",
        "bench_steering",
    ]))?;
    let bin = util::target_dir().join("release/examples/bench_steering");
    util::run(util::elevated(&bin).current_dir(&root))
}
