//! The scenarios, and the settings they run with.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{front::Front, record::Cell};
use crate::bench::{
    loadgen::{Summary, SweepSpec},
    peers::arms::Arm,
};

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    clap::ValueEnum,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Fast requests at a fixed rate, a new connection each: p50/p99.
    Uniform,
    /// The same over keep-alive connections.
    UniformKa,
    /// The skew scenario's fast requests alone (what skew is compared with).
    Baseline,
    /// Fast requests plus requests that block a worker's event loop.
    Skew,
    /// The same over keep-alive connections.
    SkewKa,
    /// Fast requests while a worker stalls and crashes every second.
    Crash,
    /// Fast requests during a rolling reload.
    Reload,
    /// Rate ramp until p99 passes the bound or a request fails.
    Saturation,
    /// The same over keep-alive connections.
    SaturationKa,
    /// Next.js standalone, fixed rate (if the fixture is built).
    Next,
    /// Next.js standalone, rate ramp.
    NextSaturation,
    /// The Next.js page alone at `--next-fast-rate` (what next-skew is
    /// compared with).
    NextBaseline,
    /// The Next.js page plus requests that block a worker's event loop,
    /// at `--next-fast-rate`.
    NextSkew,
    /// `next-baseline` at `--next-sat-rate`, close to saturation.
    NextBaselineSat,
    /// `next-skew` at `--next-sat-rate`.
    NextSkewSat,
}

impl Scenario {
    pub const DEFAULT: [Self; 15] = [
        Self::Uniform,
        Self::UniformKa,
        Self::Baseline,
        Self::Skew,
        Self::SkewKa,
        Self::Crash,
        Self::Reload,
        Self::Saturation,
        Self::SaturationKa,
        Self::Next,
        Self::NextSaturation,
        Self::NextBaseline,
        Self::NextSkew,
        Self::NextBaselineSat,
        Self::NextSkewSat,
    ];

    #[must_use]
    pub fn id(self) -> &'static str {
        match self {
            Self::Uniform => "uniform",
            Self::UniformKa => "uniform-ka",
            Self::Baseline => "baseline",
            Self::Skew => "skew",
            Self::SkewKa => "skew-ka",
            Self::Crash => "crash",
            Self::Reload => "reload",
            Self::Saturation => "saturation",
            Self::SaturationKa => "saturation-ka",
            Self::Next => "next",
            Self::NextSaturation => "next-saturation",
            Self::NextBaseline => "next-baseline",
            Self::NextSkew => "next-skew",
            Self::NextBaselineSat => "next-baseline-sat",
            Self::NextSkewSat => "next-skew-sat",
        }
    }

    #[must_use]
    pub fn keep_alive(self) -> bool {
        matches!(self, Self::UniformKa | Self::SkewKa | Self::SaturationKa)
    }

    #[must_use]
    pub fn is_next(self) -> bool {
        matches!(
            self,
            Self::Next
                | Self::NextSaturation
                | Self::NextBaseline
                | Self::NextSkew
                | Self::NextBaselineSat
                | Self::NextSkewSat
        )
    }

    /// The page rate of the Next.js baseline and skew scenarios: `below`
    /// (below saturation) or `sat` (at it); `None` for the other scenarios.
    #[must_use]
    pub fn next_fast_rate(self, below: f64, sat: f64) -> Option<f64> {
        match self {
            Self::NextBaseline | Self::NextSkew => Some(below),
            Self::NextBaselineSat | Self::NextSkewSat => Some(sat),
            _ => None,
        }
    }

    /// Does this scenario mix blocking requests with the fast ones?
    #[must_use]
    pub fn blocks(self) -> bool {
        matches!(
            self,
            Self::Skew | Self::SkewKa | Self::NextSkew | Self::NextSkewSat
        )
    }

    /// What repeated runs are compared by (the report shows the run with the
    /// median one). One match, so `figure` and `key` cannot disagree.
    fn measure(self) -> Measure {
        match self {
            Self::Uniform | Self::UniformKa | Self::Next => Measure::P50,
            Self::Baseline
            | Self::Skew
            | Self::SkewKa
            | Self::NextBaseline
            | Self::NextSkew
            | Self::NextBaselineSat
            | Self::NextSkewSat => Measure::FastP99,
            Self::Crash => Measure::Lost,
            Self::Reload => Measure::Failed,
            Self::Saturation | Self::SaturationKa | Self::NextSaturation => Measure::MaxRate,
        }
    }

    /// The name of the figure repeated runs are compared by.
    #[must_use]
    pub fn figure(self) -> &'static str {
        match self.measure() {
            Measure::P50 => "p50 ms",
            Measure::FastP99 => "fast p99 ms",
            Measure::Lost => "lost requests",
            Measure::Failed => "failed requests",
            Measure::MaxRate => "max sustainable rate /s",
        }
    }

    /// That figure in `cell`.
    #[must_use]
    pub fn key(self, cell: &Cell) -> Option<f64> {
        let first = cell.classes.first();
        // Latencies only of a class that got answers (otherwise they read 0).
        let answered = |c: &&Summary| c.ok > 0;
        #[expect(clippy::cast_precision_loss, reason = "request counts, far below 2^52")]
        match self.measure() {
            Measure::P50 => first.filter(answered).map(|c| c.p50_ms),
            Measure::FastP99 => cell.class("fast").filter(answered).map(|c| c.p99_ms),
            // Behind a front the client cannot tell where a request was
            // lost: every failed one counts.
            Measure::Lost if cell.front != Front::Direct.id() => {
                cell.crash.as_ref().map(|c| c.failed as f64)
            }
            Measure::Lost => cell.crash.as_ref().map(|c| c.lost as f64),
            Measure::Failed => first.map(|c| c.failed as f64),
            Measure::MaxRate => cell.sweep.as_ref().and_then(|s| s.max_rate),
        }
    }

    /// Does `arm` take part through `front`? The re-steering variant only
    /// matters with the `*-ka` scenarios, where it differs from the plain
    /// agent; the fronts carry the baseline, skew, crash and reload
    /// scenarios.
    #[must_use]
    pub fn applies(self, arm: Arm, front: Front) -> bool {
        match front {
            Front::Direct => arm != Arm::AgentResteer || self.keep_alive(),
            Front::Keepalive | Front::Nginx => {
                arm != Arm::AgentResteer
                    && matches!(
                        self,
                        Self::Baseline | Self::Skew | Self::Crash | Self::Reload
                    )
            }
        }
    }
}

/// The knobs of a run (the command line's, resolved).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    pub workers: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub timeout_s: f64,
    /// Rate of the uniform scenarios (requests/s).
    pub rate: f64,
    /// Keep-alive connections of the *-ka scenarios.
    pub ka_connections: usize,
    pub skew_fast_rate: f64,
    pub skew_block_rate: f64,
    pub skew_block_ms: u64,
    pub crash_fast_rate: f64,
    /// A crashing worker first blocks this long (a stall), then exits.
    pub crash_stall_ms: u64,
    pub reload_fast_rate: f64,
    /// When the reload starts, after the warm-up.
    pub reload_at_s: f64,
    pub sweep: SweepSpec,
    pub sweep_step_s: f64,
    pub next_rate: f64,
    pub next_sweep_start: f64,
    /// Page rate of next-baseline and next-skew (below saturation).
    #[serde(default = "next_fast_rate")]
    pub next_fast_rate: f64,
    /// Page rate of next-baseline-sat and next-skew-sat (at saturation).
    #[serde(default = "next_sat_rate")]
    pub next_sat_rate: f64,
    /// Blocking requests per second of next-skew and next-skew-sat.
    #[serde(default = "next_block_rate")]
    pub next_block_rate: f64,
    /// How long each of them blocks its worker's event loop.
    #[serde(default = "next_block_ms")]
    pub next_block_ms: u64,
    pub sweep_start_ka: f64,
    /// Re-steering arm: keep-alive connections close after this many requests.
    pub resteer_requests: u32,
    pub watt_restart_ms: u64,
    pub realtime: bool,
    /// Kept-alive client connections of the keepalive and nginx fronts.
    #[serde(default = "front_connections")]
    pub front_connections: usize,
    /// Crash requests per second through the keepalive and nginx fronts.
    #[serde(default = "front_crash_rate")]
    pub front_crash_rate: f64,
}

fn front_connections() -> usize {
    50
}

fn front_crash_rate() -> f64 {
    0.5
}

// What the Next.js skew scenarios ran with before they had flags (they
// did not exist: these only fill the settings of older results files).
fn next_fast_rate() -> f64 {
    80.0
}

fn next_sat_rate() -> f64 {
    NEXT_SAT_RATE
}

fn next_block_rate() -> f64 {
    4.0
}

fn next_block_ms() -> u64 {
    100
}

/// `--next-sat-rate`'s default: see its doc in args.rs.
pub const NEXT_SAT_RATE: f64 = 200.0;

impl Settings {
    /// The page rate of a Next.js baseline or skew scenario.
    #[must_use]
    pub fn next_fast_rate_of(&self, scn: Scenario) -> Option<f64> {
        scn.next_fast_rate(self.next_fast_rate, self.next_sat_rate)
    }
    pub(super) fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup_s)
    }
    pub(super) fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_s)
    }
    pub(super) fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_s)
    }
}

/// The kinds of figure a scenario's repeated runs are compared by
/// (`Scenario::figure`).
#[derive(Clone, Copy)]
enum Measure {
    P50,
    FastP99,
    Lost,
    Failed,
    MaxRate,
}
