//! The `watt-agent` command line.
use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use watt_agent::{
    cli,
    config::args::{self, RunArgs},
    exit, run,
};

#[derive(Parser)]
#[command(
    name = "watt-agent",
    version,
    about = "Runs a Node.js app's workers behind one port; an eBPF program steers every \
             connection to a ready, non-busy worker.",
    after_help = "Exit codes: 0 ok; 1 failure (agent unreachable, admin API could not start, \
                  I/O error); 2 bad command line or config; 3 the machine cannot run it \
                  (privileges, kernel, port in use, command not found); 4 shutdown needed \
                  SIGKILL. See docs/operate.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the workers: `watt-agent run --workers 4 --port 3000 -- node server.js`
    Run(Box<RunArgs>),
    /// Check the settings (command line, WATT_* variables, --config file)
    /// without starting anything; print them resolved, with where each came from
    CheckConfig(Box<RunArgs>),
    /// Show the running agent's workers: state, pid, uptime, restarts, load
    Status(cli::StatusArgs),
    /// Rolling reload: replace every worker, one at a time, without dropping a connection
    Reload(cli::ReloadArgs),
    /// Replace one worker (a new process starts, then the old one drains)
    Restart(cli::RestartArgs),
    /// Live view of the workers, refreshed every second
    Top(cli::TopArgs),
    /// The shared HTTP cache: `watt-agent cache invalidate --tag T` / `--key URL`
    #[command(subcommand)]
    Cache(cli::CacheCommand),
    /// Check that this machine can run the agent: kernel, BPF, capabilities, Node, port
    Doctor(cli::DoctorArgs),
}

fn main() -> ExitCode {
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let (cli, matches) = match parsed {
        Ok(p) => p,
        Err(e) => {
            let _ = e.print();
            return exit_code(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let from_env = matches
        .subcommand()
        .map(|(_, sub)| args::env_sourced(sub))
        .unwrap_or_default();
    let code = match cli.command {
        Command::Run(mut a) => {
            a.from_env = from_env;
            run::run(&a)
        }
        Command::CheckConfig(mut a) => {
            a.from_env = from_env;
            cli::check_config(&a)
        }
        Command::Status(a) => cli::status(&a),
        Command::Reload(a) => cli::reload(&a),
        Command::Restart(a) => cli::command(&a.client, Some(a.worker)),
        Command::Top(a) => cli::top(&a),
        Command::Cache(c) => cli::cache(&c),
        Command::Doctor(a) => cli::doctor(&a),
    };
    exit_code(code)
}

/// The process exit code for one of the `exit` codes (all fit in a byte;
/// anything else would be a failure).
fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
