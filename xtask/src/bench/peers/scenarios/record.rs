//! What one run of a scenario against one arm (a cell) records.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bench::loadgen::{ClientStats, Summary, Sweep};

/// What a crash cell found out about its failed fast requests.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CrashStats {
    /// Stall-then-crash requests sent (one per second).
    pub crashes: u64,
    /// Fast requests that failed.
    pub failed: u64,
    /// ...of which a worker had accepted (in the app's accept log): they died
    /// with the crashing worker, which no balancer can save.
    pub accepted: u64,
    /// ...of which no worker ever accepted: lost in a dead worker's accept
    /// queue, refused, or lost in a hand-over.
    pub lost: u64,
    pub lost_kinds: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReloadStats {
    pub how: String,
    /// From the reload's start to its end (as the arm reports it).
    pub took_s: f64,
    pub error: Option<String>,
}

/// The outcome of one scenario on one arm.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Cell {
    pub scenario: String,
    pub arm: String,
    pub label: String,
    /// `ok`, `error` or `skipped`.
    pub status: String,
    pub error: Option<String>,
    pub classes: Vec<Summary>,
    pub client: Option<ClientStats>,
    /// Latency (ms) at quantiles of the first class: [[q, ms], ...].
    pub curve: Vec<[f64; 2]>,
    pub crash: Option<CrashStats>,
    pub reload: Option<ReloadStats>,
    pub sweep: Option<Sweep>,
    /// Wall time of the cell, start and stop included.
    pub seconds: f64,
}

impl Cell {
    #[must_use]
    pub fn class(&self, name: &str) -> Option<&Summary> {
        self.classes.iter().find(|c| c.name == name)
    }

    #[must_use]
    pub fn ok(&self) -> bool {
        self.status == "ok"
    }
}

pub const CURVE: [f64; 9] = [0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0];
