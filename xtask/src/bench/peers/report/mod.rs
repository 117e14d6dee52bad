//! Results: JSON, a markdown report with the targets checked, and the
//! files under bench/results/ (plus the latest table in bench/README.md).
mod markdown;
mod targets;

use std::{collections::BTreeMap, fs, path::Path};

use anyhow::Context as _;
pub use markdown::markdown;
use serde::{Deserialize, Serialize};
pub use targets::targets;

use super::{
    arms::Arm,
    scenarios::{Cell, Scenario, Settings},
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
    #[must_use]
    pub fn cell(&self, scenario: Scenario, arm: Arm) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.scenario == scenario.id() && c.arm == arm.id() && c.ok())
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

/// Writes `peers-<stamp>.{json,md,svg}` under bench/results/ and, when
/// `latest` (a run of every scenario and arm), `latest.{md,svg}` and the
/// table in bench/README.md.
pub fn write(
    root: &Path,
    r: &Results,
    stamp: &str,
    svg: &str,
    latest: bool,
) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let dir = root.join("bench/results");
    fs::create_dir_all(&dir)?;
    let base = format!("peers-{stamp}");
    let json = dir.join(format!("{base}.json"));
    fs::write(&json, serde_json::to_string_pretty(r)?)?;
    let svg_path = dir.join(format!("{base}.svg"));
    fs::write(&svg_path, svg)?;
    let md_path = dir.join(format!("{base}.md"));
    fs::write(&md_path, markdown(r, &format!("{base}.svg")))?;
    if !latest {
        return Ok(vec![json, md_path, svg_path]);
    }
    fs::write(dir.join("latest.svg"), svg)?;
    fs::write(dir.join("latest.md"), markdown(r, "latest.svg"))?;
    update_readme(root, r)?;
    Ok(vec![
        json,
        md_path,
        svg_path,
        dir.join("latest.md"),
        dir.join("latest.svg"),
    ])
}

const BEGIN: &str = "<!-- latest-peers:begin -->";
const END: &str = "<!-- latest-peers:end -->";

/// Replaces the part of bench/README.md between the markers with this run's
/// report (links rewritten to results/).
fn update_readme(root: &Path, r: &Results) -> anyhow::Result<()> {
    let path = root.join("bench/README.md");
    let text = fs::read_to_string(&path).context("read bench/README.md")?;
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        anyhow::bail!("bench/README.md lacks the {BEGIN} / {END} markers");
    };
    let body = markdown(r, "results/latest.svg")
        .replacen(
            "# watt-agent and its peers, side by side",
            "### Latest run",
            1,
        )
        .replace("\n## ", "\n#### ");
    let new = format!(
        "{}{BEGIN}\n{body}\n{END}{}",
        &text[..b],
        &text[e + END.len()..]
    );
    fs::write(&path, new)?;
    Ok(())
}
