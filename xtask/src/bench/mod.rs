//! Benchmarks: programs that print numbers. None of them asserts a time.
mod steering;

#[derive(clap::Subcommand)]
pub enum Command {
    /// New-connection rate with the program vs plain SO_REUSEPORT, and the
    /// program's cost per decision from the kernel's BPF stats.
    Steering,
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Steering => steering::run(),
    }
}
