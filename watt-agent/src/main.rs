//! The `watt-agent` command line.
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use watt_agent::{config::args::RunArgs, run};

#[derive(Parser)]
#[command(
    name = "watt-agent",
    version,
    about = "Runs a Node.js app's workers behind one port; an eBPF program steers every \
             connection to a ready, non-busy worker."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the workers: `watt-agent run --workers 4 --port 3000 -- node server.js`
    Run(Box<RunArgs>),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                run::exit::USAGE as u8
            } else {
                0
            });
        }
    };
    let code = match cli.command {
        Command::Run(args) => run::run(&args),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
