//! What one run of a scenario against one arm (a cell) records.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::front;
use crate::bench::{
    loadgen::{ClientStats, Summary, Sweep},
    peers::nginx::Seen,
};

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
    /// Through a front: worker crashes in the measured window, from the
    /// arm's own account (watt-agent's crash lines, the bench preload's
    /// exit records); `None` where the arm gives none (Watt).
    #[serde(default)]
    pub worker_crashes: Option<u64>,
    /// Through a front: fast requests in flight on those workers when they
    /// died (the crash request itself left out): what no balancer or proxy
    /// can save. `None` where the arm gives no account.
    #[serde(default)]
    pub in_flight: Option<u64>,
    /// Connections refused in the measured window: the client's, plus
    /// nginx's to the arm (its error log; warm-up included).
    #[serde(default)]
    pub refused: u64,
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
    /// How the clients reached the arm (a [`Front`](super::Front) id).
    #[serde(default = "front::direct")]
    pub front: String,
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
    /// The nginx front's logs.
    #[serde(default)]
    pub nginx: Option<Seen>,
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

    /// The report's section: the scenario, and the front when there is one
    /// (`skew`, `skew via nginx`).
    #[must_use]
    pub fn section(&self) -> String {
        if self.front == front::direct() {
            self.scenario.clone()
        } else {
            format!("{} via {}", self.scenario, self.front)
        }
    }
}

pub const CURVE: [f64; 9] = [0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0];
