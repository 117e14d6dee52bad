//! The command line of `cargo xtask bench peers`, and the scenario settings
//! it turns into.
use std::path::PathBuf;

use super::{
    arms::Arm,
    scenarios::{Front, NEXT_SAT_RATE, Scenario, Settings},
};
use crate::bench::loadgen::SweepSpec;

#[derive(clap::Args, Clone, Debug)]
pub struct PeersArgs {
    /// Scenarios to run, comma-separated [default: all]
    #[arg(long, value_delimiter = ',', value_enum)]
    pub scenarios: Vec<Scenario>,
    /// Arms to run, comma-separated [default: all]
    #[arg(long, value_delimiter = ',', value_enum)]
    pub arms: Vec<Arm>,
    /// How clients reach each arm, comma-separated [default: all]: direct
    /// (every scenario), keepalive and nginx (the baseline, skew, crash
    /// and reload scenarios).
    #[arg(long, value_delimiter = ',', value_enum)]
    pub fronts: Vec<Front>,
    /// Kept-alive client connections of the keepalive and nginx fronts.
    #[arg(long, default_value_t = 50)]
    pub front_connections: usize,
    /// Crash requests (`GET /crash`) per second through the keepalive and
    /// nginx fronts: a worker crash every 2 s by default.
    #[arg(long, default_value_t = 0.5)]
    pub front_crash_rate: f64,
    /// Workers per arm.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Measured seconds per scenario and arm (fixed-rate scenarios).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Warm-up seconds before each measured window (not counted).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Rate of the uniform scenarios (requests/s).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Keep-alive connections in the *-ka scenarios.
    #[arg(long, default_value_t = 32)]
    pub ka_connections: usize,
    /// Fast-request rate of the skew, crash and reload scenarios.
    #[arg(long, default_value_t = 300.0)]
    pub fast_rate: f64,
    /// Page rate of next-baseline and next-skew: below saturation (the
    /// issue's 80/s).
    #[arg(long, default_value_t = 80.0)]
    pub next_fast_rate: f64,
    /// Page rate of next-baseline-sat and next-skew-sat: close to the best
    /// arm's maximum sustainable rate in next-saturation on this machine.
    #[arg(long, default_value_t = NEXT_SAT_RATE)]
    pub next_sat_rate: f64,
    /// Blocking requests (`GET /block?ms=`) per second in next-skew and
    /// next-skew-sat.
    #[arg(long, default_value_t = 4.0)]
    pub next_block_rate: f64,
    /// How long each blocks its worker's event loop (ms).
    #[arg(long, default_value_t = 100)]
    pub next_block_ms: u64,
    /// First rate of the saturation sweeps (requests/s).
    #[arg(long, default_value_t = 1000.0)]
    pub sweep_start: f64,
    /// First rate of the Next.js saturation sweep (requests/s).
    #[arg(long, default_value_t = 50.0)]
    pub next_sweep_start: f64,
    /// First rate of the keep-alive saturation sweep (requests/s).
    #[arg(long, default_value_t = 4000.0)]
    pub sweep_start_ka: f64,
    /// Factor between sweep steps.
    #[arg(long, default_value_t = 1.25)]
    pub sweep_factor: f64,
    /// At most this many sweep steps.
    #[arg(long, default_value_t = 14)]
    pub sweep_steps: usize,
    /// Measured seconds per sweep step (plus 0.5 s warm-up).
    #[arg(long, default_value_t = 2.0)]
    pub sweep_step: f64,
    /// A sweep step fails when p99 passes this (ms).
    #[arg(long, default_value_t = 50.0)]
    pub p99_bound: f64,
    /// Runs of every cell, round after round with the arms in a rotated
    /// order; the report shows each cell's median run and every run's figure.
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// First port; each cell takes the next free one.
    #[arg(long, default_value_t = 24300)]
    pub port: u16,
    /// Use this agent binary instead of building one.
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// Do not build the agent; use target/release/watt-agent as it is.
    #[arg(long)]
    pub no_build: bool,
    /// Run the load generator as an ordinary thread. By default it runs with
    /// `SCHED_FIFO` priority 1 (when allowed), so other work on the machine
    /// does not delay its schedule; it sleeps between requests.
    #[arg(long)]
    pub no_realtime: bool,
    /// Print the results but write nothing under bench/results.
    #[arg(long)]
    pub no_save: bool,
    /// Run nothing: rewrite the report, chart (and, for a complete run, the
    /// latest files) from a results JSON this command wrote.
    #[arg(long, value_name = "JSON")]
    pub render: Option<PathBuf>,
}

impl PeersArgs {
    pub(super) fn settings(&self) -> Settings {
        Settings {
            workers: self.workers,
            warmup_s: self.warmup,
            duration_s: self.duration,
            timeout_s: 5.0,
            rate: self.rate,
            ka_connections: self.ka_connections,
            skew_fast_rate: self.fast_rate,
            skew_block_rate: 8.0,
            skew_block_ms: 100,
            crash_fast_rate: self.fast_rate,
            crash_stall_ms: 100,
            reload_fast_rate: self.fast_rate,
            reload_at_s: 1.0,
            sweep: SweepSpec {
                start: self.sweep_start,
                factor: self.sweep_factor,
                max_steps: self.sweep_steps,
                max_rate: 100_000.0,
                p99_bound_ms: self.p99_bound,
                max_error_ratio: 0.0,
                // Latency counts from the schedule, so the client's own
                // lateness is inside p99 already; it only ends a step by
                // itself when it alone passes the bound.
                max_client_lag_ms: self.p99_bound,
                retries: 1,
            },
            sweep_step_s: self.sweep_step,
            next_rate: 100.0,
            next_sweep_start: self.next_sweep_start,
            next_fast_rate: self.next_fast_rate,
            next_sat_rate: self.next_sat_rate,
            next_block_rate: self.next_block_rate,
            next_block_ms: self.next_block_ms,
            sweep_start_ka: self.sweep_start_ka,
            resteer_requests: 100,
            watt_restart_ms: 100,
            realtime: !self.no_realtime,
            front_connections: self.front_connections,
            front_crash_rate: self.front_crash_rate,
        }
    }
}
