//! The order cells run in, and the one run of each cell the report shows.
use super::{
    arms::Arm,
    report,
    scenarios::{self, Front, Scenario},
};

/// One cell of a plan: a scenario, through a front, on an arm.
pub(super) type Slot = (Scenario, Front, Arm);

/// Every (scenario, front, arm) cell `repeats` times: round after round,
/// each round with the arms rotated by one, so that order effects (the
/// first cell on a cold machine) do not always favour the same arm. Within
/// a round, front after front, scenario after scenario.
pub(super) fn plan(
    scenarios: &[Scenario],
    fronts: &[Front],
    arms: &[Arm],
    repeats: usize,
) -> Vec<Slot> {
    let mut out = Vec::new();
    for round in 0..repeats {
        let mut order = arms.to_vec();
        order.rotate_left(round % arms.len().max(1));
        for &front in fronts {
            for &scn in scenarios {
                out.extend(
                    order
                        .iter()
                        .filter(|&&a| scn.applies(a, front))
                        .map(|&a| (scn, front, a)),
                );
            }
        }
    }
    out
}

/// One cell per (scenario, arm), in the first round's order: the run with
/// the median key figure (the lower middle of an even count); and, when
/// there was more than one run, every run's figure.
pub(super) fn medians(
    plan: &[Slot],
    mut runs: Vec<(Slot, scenarios::Cell)>,
    repeats: usize,
) -> (Vec<scenarios::Cell>, Vec<report::Repeat>) {
    let per_round = plan.len() / repeats.max(1);
    let mut cells = Vec::new();
    let mut spread = Vec::new();
    for &slot in &plan[..per_round] {
        let (scn, front, arm) = slot;
        let mut mine: Vec<scenarios::Cell> = Vec::new();
        let mut rest = Vec::new();
        for (s, c) in runs {
            if s == slot {
                mine.push(c);
            } else {
                rest.push((s, c));
            }
        }
        runs = rest;
        let values: Vec<Option<f64>> = mine
            .iter()
            .map(|c| if c.ok() { scn.key(c) } else { None })
            .collect();
        if repeats > 1 {
            spread.push(report::Repeat {
                scenario: if front == Front::Direct {
                    scn.id().into()
                } else {
                    format!("{} via {}", scn.id(), front.id())
                },
                label: arm.label().into(),
                figure: scn.figure().into(),
                values: values.clone(),
            });
        }
        let mut ranked: Vec<(f64, usize)> = values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (v, i)))
            .collect();
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
        let pick = ranked
            .get(ranked.len().saturating_sub(1) / 2)
            .map_or(0, |&(_, i)| i);
        if pick < mine.len() {
            cells.push(mine.swap_remove(pick));
        }
    }
    (cells, spread)
}

#[cfg(test)]
mod tests {
    #[test]
    fn repeats_rotate_the_arms_and_report_the_median_run() {
        use super::{Arm, Front, Scenario, scenarios::Cell};
        let arms = [Arm::Agent, Arm::Reuseport];
        let plan = super::plan(&[Scenario::Crash], &[Front::Direct], &arms, 3);
        assert_eq!(
            plan.iter().map(|p| p.2).collect::<Vec<_>>(),
            [
                Arm::Agent,
                Arm::Reuseport,
                Arm::Reuseport,
                Arm::Agent,
                Arm::Agent,
                Arm::Reuseport
            ]
        );
        let cell = |arm: Arm, lost: u64, ok: bool| Cell {
            scenario: "crash".into(),
            front: "direct".into(),
            arm: arm.id().into(),
            label: arm.label().into(),
            status: if ok { "ok" } else { "error" }.into(),
            crash: Some(super::scenarios::CrashStats {
                lost,
                ..Default::default()
            }),
            ..Cell::default()
        };
        let runs = vec![
            (
                (Scenario::Crash, Front::Direct, Arm::Agent),
                cell(Arm::Agent, 5, true),
            ),
            (
                (Scenario::Crash, Front::Direct, Arm::Reuseport),
                cell(Arm::Reuseport, 80, true),
            ),
            (
                (Scenario::Crash, Front::Direct, Arm::Reuseport),
                cell(Arm::Reuseport, 0, false),
            ),
            (
                (Scenario::Crash, Front::Direct, Arm::Agent),
                cell(Arm::Agent, 0, true),
            ),
            (
                (Scenario::Crash, Front::Direct, Arm::Agent),
                cell(Arm::Agent, 1, true),
            ),
            (
                (Scenario::Crash, Front::Direct, Arm::Reuseport),
                cell(Arm::Reuseport, 90, true),
            ),
        ];
        let (cells, repeats) = super::medians(&plan, runs, 3);
        let lost: Vec<(String, u64)> = cells
            .iter()
            .map(|c| (c.arm.clone(), c.crash.as_ref().unwrap().lost))
            .collect();
        // Agent: 0, 1, 5 -> 1. reusePort: 80, 90 (one run failed) -> 80.
        assert_eq!(
            lost,
            [("agent".to_owned(), 1), ("reuseport".to_owned(), 80)]
        );
        assert_eq!(repeats[1].values, [Some(80.0), None, Some(90.0)]);
        assert_eq!(repeats[0].figure, "lost requests");
    }
}
