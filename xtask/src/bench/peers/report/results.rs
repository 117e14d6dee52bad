//! What one run of the bench records, as saved in its JSON.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bench::peers::{
    arms::Arm,
    scenarios::{Cell, Front, Scenario, Settings},
};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    /// UTC, e.g. 2026-11-27T07:40:00Z.
    pub date: String,
    pub machine: BTreeMap<String, String>,
    pub versions: BTreeMap<String, String>,
    pub settings: Settings,
    /// One cell per scenario and arm: with `--repeats`, the median run.
    pub cells: Vec<Cell>,
    /// With `--repeats`: every run's figure, per scenario and arm.
    #[serde(default)]
    pub repeats: Vec<Repeat>,
    pub targets: Vec<Target>,
    /// Wall time of the whole run.
    pub seconds: f64,
}

/// The runs of one scenario on one arm, by the scenario's key figure.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Repeat {
    pub scenario: String,
    pub label: String,
    pub figure: String,
    /// In run order; `None` for a run that failed.
    pub values: Vec<Option<f64>>,
}

/// One of the targets, checked on this run's numbers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Target {
    pub scenario: String,
    pub goal: String,
    pub measured: String,
    /// `None`: this run lacks the numbers (an arm or scenario was not run).
    pub pass: Option<bool>,
    /// Reported, not a target: the keep-alive variants.
    #[serde(default)]
    pub informational: bool,
}

impl Results {
    /// The cell of `scenario` on `arm` with the clients straight on the arm.
    #[must_use]
    pub fn cell(&self, scenario: Scenario, arm: Arm) -> Option<&Cell> {
        self.cell_via(scenario, Front::Direct, arm)
    }

    /// The cell of `scenario` on `arm` through `front`, if it ran and did not fail.
    #[must_use]
    pub fn cell_via(&self, scenario: Scenario, front: Front, arm: Arm) -> Option<&Cell> {
        self.cells.iter().find(|c| {
            c.scenario == scenario.id() && c.front == front.id() && c.arm == arm.id() && c.ok()
        })
    }
}

/// A figure with three significant digits or so.
pub(super) fn f(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
