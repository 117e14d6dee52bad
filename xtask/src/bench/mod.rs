//! Benchmarks: programs that print numbers. None of them asserts a time.
mod cache;
pub mod loadgen;
mod loadgen_check;
mod peers;
mod skew;
mod steering;

#[derive(clap::Subcommand)]
pub enum Command {
    /// New-connection rate with the program vs plain `SO_REUSEPORT`, and the
    /// program's cost per decision from the kernel's BPF stats.
    Steering,
    /// watt-agent side by side with Platformatic Watt, PM2 cluster mode,
    /// Node's cluster module and plain `SO_REUSEPORT` (results in bench/results/).
    Peers(peers::PeersArgs),
    /// Tail latency with event-loop-blocking requests: the default policy vs
    /// `hash` and `kernel`, tick choices, uniform-load cost, idle footprint.
    Skew(skew::Args),
    /// The latency of a shared HTTP cache's hit as the app sees it: watt-agent's
    /// local and fleet stores, Watt's shared cache, undici's `SQLite` store in
    /// every worker, and no cache (results in bench/results/).
    Cache(cache::Args),
    /// The load generator's own ceiling against a trivial in-process server.
    Loadgen(loadgen_check::Args),
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Steering => steering::run(),
        Command::Peers(args) => peers::run(&args),
        Command::Loadgen(args) => loadgen_check::run(&args),
        Command::Skew(args) => skew::run(&args),
        Command::Cache(args) => cache::run(&args),
    }
}

/// `a 1, b 2`: a report's one-line list of names and values.
pub fn pairs<K: std::fmt::Display, V: std::fmt::Display>(
    items: impl IntoIterator<Item = (K, V)>,
) -> String {
    items
        .into_iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
