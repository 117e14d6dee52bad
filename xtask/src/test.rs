//! `cargo xtask test`: every test. Unit tests first (no privileges), then the
//! integration tests, which load BPF programs and run Node workers: they run
//! as root (through `sudo -E` when needed) and one at a time, because they
//! share kernel state.
use std::{path::Path, process::Command};

use crate::{setup, util};

#[derive(clap::Args)]
pub struct Options {
    /// Skip `cargo fmt --check` and `cargo clippy`.
    #[arg(long)]
    no_lint: bool,
    /// Only run integration tests whose name contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Skip the deployment checks (manifests, Dockerfile, the namespace e2e).
    #[arg(long)]
    no_deploy: bool,
    /// Skip the kernel matrix (`cargo xtask kernels`: qemu guests).
    #[arg(long)]
    no_kernels: bool,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    setup::run(&setup::Options {
        check: false,
        fixtures: true,
    })?;
    let root = util::root();
    let cargo = || {
        let mut c = Command::new(env!("CARGO"));
        c.current_dir(&root);
        c
    };
    if !opts.no_lint {
        lint(&root)?;
    }
    util::run(cargo().args([
        "test",
        "--workspace",
        "--exclude",
        "watt-tests",
        "--exclude",
        "watt-ebpf",
    ]))?;
    // The integration tests run the release binary (the balancer's timing is
    // what production gets).
    util::run(cargo().args(["build", "--release", "-p", "watt-agent"]))?;

    let mut integration = cargo();
    integration
        .env(
            "WATT_AGENT_BIN",
            util::target_dir().join("release/watt-agent"),
        )
        .args(["test", "-p", "watt-tests"]);
    let elevate = util::elevate();
    if !elevate.is_empty() {
        let runner = elevate.join(" ");
        integration
            .arg("--config")
            .arg(format!("target.'cfg(all())'.runner = \"{runner}\""));
    }
    integration.args(["--", "--test-threads=1"]);
    if let Some(filter) = &opts.filter {
        integration.arg(filter);
    }
    util::run(&mut integration)?;
    if opts.filter.is_some() {
        return Ok(());
    }
    if !opts.no_deploy {
        deploy(&root)?;
    }
    if opts.no_kernels {
        return Ok(());
    }
    // The same kernel tests, doctor and DaemonSet e2e on the kernels EKS
    // nodes run, each booted under qemu.
    util::run(
        util::elevated(env!("CARGO"))
            .current_dir(&root)
            .args(["xtask", "kernels"]),
    )
}

/// rustfmt and clippy over every crate, warnings as errors.
fn lint(root: &Path) -> anyhow::Result<()> {
    let cargo = || {
        let mut c = Command::new(env!("CARGO"));
        c.current_dir(root);
        c
    };
    // Nightly rustfmt: rustfmt.toml groups and merges imports, which
    // stable rustfmt does not support yet.
    util::run(
        Command::new("cargo")
            .current_dir(root)
            .args(["+nightly", "fmt", "--all", "--check"]),
    )?;
    // The eBPF crate only builds for the BPF target, with nightly.
    util::run(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "watt-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    util::run(
        Command::new("cargo")
            .current_dir(root.join("watt-ebpf"))
            .args([
                "+nightly",
                "clippy",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ]),
    )?;
    Ok(())
}

/// The deployment checks: rendered manifests validated and scanned, and the
/// `DaemonSet`'s container emulated in namespaces with its exact capabilities.
fn deploy(root: &Path) -> anyhow::Result<()> {
    let elevated = |script: &str, args: &[&str]| {
        util::run(
            util::elevated("bash")
                .current_dir(root)
                .arg(root.join(script))
                .args(args),
        )
    };
    elevated("deploy/check.sh", &[])?;
    let agent = util::target_dir().join("release/watt-agent");
    let agent = agent.to_str().unwrap_or("target/release/watt-agent");
    elevated("deploy/e2e-netns.sh", &[agent])?;
    elevated("deploy/e2e-netns.sh", &["--overlay", "privileged", agent])
}
