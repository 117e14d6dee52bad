//! Results: JSON, a markdown report with the targets checked, and the
//! files under bench/results/ (plus the latest table in bench/README.md).
mod markdown;
mod results;
mod targets;

use std::{fs, path::Path};

use anyhow::Context as _;
pub use markdown::markdown;
pub use results::{Repeat, Results};
pub use targets::targets;

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

#[cfg(test)]
mod tests {
    use super::{Results, markdown, targets};
    use crate::{
        bench::{
            loadgen::Summary,
            peers::{
                arms::Arm,
                scenarios::{Cell, Scenario},
            },
        },
        util,
    };

    /// Results written before the fronts existed read as cells straight on
    /// the arms, and render as before.
    #[test]
    fn results_from_before_the_fronts_still_render() {
        let path = util::root().join("bench/results/peers-20261127-104908.json");
        let text = std::fs::read_to_string(path).expect("a saved results file");
        let mut r: Results = serde_json::from_str(&text).expect("old results parse");
        assert!(r.cells.iter().all(|c| c.front == "direct"));
        assert_eq!(r.settings.front_connections, 50);
        r.targets = targets(&r);
        let md = markdown(&r, "x.svg");
        assert!(md.contains("## skew-ka\n"));
        assert!(!md.contains(" via ") && !md.contains("## Through fronts"));
        assert!(!md.contains("## Next.js skew") && !md.contains("next-skew"));
    }

    /// A cell of a Next.js scenario whose page got `p99` ms.
    fn next_cell(scn: Scenario, arm: Arm, p99: f64) -> Cell {
        Cell {
            scenario: scn.id().into(),
            front: "direct".into(),
            arm: arm.id().into(),
            label: arm.label().into(),
            status: "ok".into(),
            classes: vec![Summary {
                name: "fast".into(),
                ok: 1000,
                sent: 1000,
                p99_ms: p99,
                p999_ms: p99 * 2.0,
                ..Summary::default()
            }],
            ..Cell::default()
        }
    }

    /// The Next.js skew targets: no worse than the best peer at both
    /// rates, and below saturation at most 1.5x the agent's own baseline.
    #[test]
    fn next_skew_targets_compare_with_the_best_peer_and_the_agents_baseline() {
        let path = util::root().join("bench/results/peers-20261127-104908.json");
        let text = std::fs::read_to_string(path).expect("a saved results file");
        let mut r: Results = serde_json::from_str(&text).expect("old results parse");
        let run = |r: &mut Results, agent_skew: f64, agent_sat: f64| {
            r.cells = vec![
                next_cell(Scenario::NextBaseline, Arm::Agent, 10.0),
                next_cell(Scenario::NextBaseline, Arm::Pm2, 9.0),
                next_cell(Scenario::NextSkew, Arm::Agent, agent_skew),
                next_cell(Scenario::NextSkew, Arm::Pm2, 20.0),
                next_cell(Scenario::NextSkew, Arm::Watt, 90.0),
                next_cell(Scenario::NextSkewSat, Arm::Agent, agent_sat),
                next_cell(Scenario::NextSkewSat, Arm::Cluster, 100.0),
            ];
            let t = targets(r);
            let pass = |id: &str| {
                t.iter()
                    .find(|x| x.scenario.starts_with(&format!("{id} (")))
                    .and_then(|x| x.pass)
            };
            (pass("next-skew"), pass("next-skew-sat"))
        };
        // 14 ms: under PM2's 20 and 1.4x the baseline; 99 under 100.
        assert_eq!(run(&mut r, 14.0, 99.0), (Some(true), Some(true)));
        // 16 ms: still under PM2's, but 1.6x the agent's baseline.
        assert_eq!(run(&mut r, 16.0, 99.0), (Some(false), Some(true)));
        // Worse than the best peer at saturation.
        assert_eq!(run(&mut r, 14.0, 101.0), (Some(true), Some(false)));
        r.targets = targets(&r);
        let md = markdown(&r, "x.svg");
        assert!(md.contains("## Next.js skew\n"), "{md}");
        assert!(
            md.contains("| next-skew-sat | fast p99 ms | 101 | - | - | 100 |"),
            "{md}"
        );
        assert!(
            md.contains("| next-baseline | fast p99.9 ms | 20.0 | - | 18.0 | - |"),
            "{md}"
        );
        assert!(
            md.contains("| next-skew | failed | 0 | 0 | 0 | - |"),
            "{md}"
        );
    }
}
