//! Developer commands for watt-agent. Everything a fresh machine needs is
//! reached from two of them: `cargo xtask run` and `cargo xtask test`.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod build;
mod kernels;
mod run;
mod setup;
mod test;
mod util;

#[derive(Parser)]
#[command(about = "watt-agent developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install or check the eBPF toolchain, bpffs, Node (idempotent).
    Setup(setup::Options),
    /// Build the agent (release) with its embedded eBPF program.
    Build,
    /// Run the agent on the bundled example app (arguments are passed to
    /// `watt-agent run` instead).
    Run(run::Options),
    /// Run every test: unit tests, then the root/BPF/Node integration tests.
    Test(test::Options),
    /// The kernel matrix: boot Debian's cloud kernels under qemu and run the
    /// kernel tests, doctor and the `DaemonSet` e2e inside each (and, on arm64,
    /// the kernel tests, doctor and an agent smoke test).
    Kernels(kernels::Options),
    /// Benchmarks: programs that print numbers.
    #[command(subcommand)]
    Bench(bench::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup(opts) => setup::run(&opts),
        Command::Build => setup::run(&setup::Options::default()).and_then(|()| build::release()),
        Command::Run(opts) => run::run(opts),
        Command::Test(opts) => test::run(&opts),
        Command::Kernels(opts) => {
            setup::run(&setup::Options::default()).and_then(|()| kernels::run(&opts))
        }
        Command::Bench(cmd) => bench::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}
