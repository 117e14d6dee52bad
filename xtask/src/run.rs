//! `cargo xtask run`: the agent on the bundled example app.
use std::os::unix::process::CommandExt as _;

use anyhow::Context as _;

use crate::{build, setup, util};

#[derive(clap::Args)]
pub struct Options {
    /// Arguments for `watt-agent run`; without any, the example app runs on
    /// 4 workers on port 3000.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    setup::run(&setup::Options::default())?;
    let agent = build::release_binary()?;
    let root = util::root();
    let args = if opts.args.is_empty() {
        let app = root.join("examples/app/server.js");
        vec![
            "run".into(),
            "--workers".into(),
            "4".into(),
            "--port".into(),
            "3000".into(),
            "--".into(),
            "node".into(),
            app.display().to_string(),
        ]
    } else {
        let mut args = vec!["run".to_string()];
        args.extend(opts.args);
        args
    };
    let mut cmd = util::elevated(&agent);
    cmd.args(&args).current_dir(&root);
    eprintln!("xtask run: {cmd:?}");
    // Replace this process so signals (Ctrl-C) go straight to the agent.
    let err = cmd.exec();
    Err(err).context("could not start watt-agent")
}
