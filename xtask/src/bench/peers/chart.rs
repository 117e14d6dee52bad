//! The chart: per scenario, latency (log scale) at each percentile, one
//! line per arm; per rate sweep, the maximum sustainable rate per arm.
use plotters::prelude::*;

use super::{arms::Arm, report::Results, scenarios::CURVE};

fn color(arm: &str) -> RGBColor {
    match Arm::from_id(arm) {
        Some(Arm::Agent) => RGBColor(214, 39, 40),
        Some(Arm::AgentKernel) => RGBColor(255, 127, 14),
        Some(Arm::AgentResteer) => RGBColor(227, 119, 194),
        Some(Arm::AgentEqual) => RGBColor(188, 189, 34),
        Some(Arm::AgentNoQuarantine) => RGBColor(140, 86, 75),
        Some(Arm::Watt) => RGBColor(31, 119, 180),
        Some(Arm::Pm2) => RGBColor(44, 160, 44),
        Some(Arm::Cluster) => RGBColor(148, 103, 189),
        Some(Arm::Reuseport) => RGBColor(127, 127, 127),
        None => RGBColor(0, 0, 0),
    }
}

/// A slot of a chart (a percentile of the curve, an arm's bar) as a coordinate.
fn coord(i: usize) -> f64 {
    f64::from(u32::try_from(i).expect("a chart has few slots"))
}

fn pct_label(q: f64) -> String {
    if q >= 1.0 {
        "max".into()
    } else {
        let p = q * 100.0;
        let s = format!("{p:.2}");
        format!("p{}", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// The SVG document.
pub fn svg(r: &Results) -> anyhow::Result<String> {
    let mut scenarios: Vec<String> = Vec::new();
    for c in &r.cells {
        if c.ok() && !scenarios.contains(&c.section()) {
            scenarios.push(c.section());
        }
    }
    let mut out = String::new();
    let rows = scenarios.len().div_ceil(2).max(1);
    {
        let height = 340 * u32::try_from(rows).expect("a chart has few rows");
        let root = SVGBackend::with_string(&mut out, (1200, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let areas = root.split_evenly((rows, 2));
        for (area, scn) in areas.iter().zip(&scenarios) {
            let cells: Vec<_> = r
                .cells
                .iter()
                .filter(|c| &c.section() == scn && c.ok())
                .collect();
            let res = if scn.contains("saturation") {
                bars(area, scn, &cells)
            } else {
                lines(area, scn, &cells)
            };
            res.map_err(|e| anyhow::anyhow!("chart {scn}: {e:?}"))?;
        }
        root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    Ok(out)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

fn lines(area: &Area<'_>, scn: &str, cells: &[&super::scenarios::Cell]) -> DrawResult {
    let mut lo = f64::MAX;
    let mut hi = 0f64;
    for c in cells {
        for p in &c.curve {
            lo = lo.min(p[1].max(0.01));
            hi = hi.max(p[1]);
        }
    }
    if hi <= 0.0 {
        return Ok(());
    }
    let class = cells
        .first()
        .and_then(|c| c.classes.first())
        .map_or(String::new(), |s| s.target.clone());
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{scn}: {class} latency (ms)"), ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(52)
        .build_cartesian_2d(
            0f64..coord(CURVE.len() - 1),
            (lo * 0.8..hi * 1.25).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_labels(CURVE.len())
        .x_label_formatter(&|x| {
            // Only ticks on a point of the curve get a label.
            (0..CURVE.len())
                .find(|&i| (x - coord(i)).abs() < 0.01)
                .map_or(String::new(), |i| pct_label(CURVE[i]))
        })
        .y_label_formatter(&|y| {
            if *y >= 10.0 {
                format!("{y:.0}")
            } else if *y >= 1.0 {
                format!("{y:.1}")
            } else {
                format!("{y:.2}")
            }
        })
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for c in cells {
        let col = color(&c.arm);
        let pts: Vec<(f64, f64)> = c
            .curve
            .iter()
            .enumerate()
            .map(|(i, p)| (coord(i), p[1].max(lo * 0.8)))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))?
            .label(c.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], col.stroke_width(2)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 2, col.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 12))
        .draw()?;
    Ok(())
}

fn bars(area: &Area<'_>, scn: &str, cells: &[&super::scenarios::Cell]) -> DrawResult {
    let rates: Vec<(String, String, f64)> = cells
        .iter()
        .map(|c| {
            (
                c.arm.clone(),
                c.label.clone(),
                c.sweep.as_ref().and_then(|s| s.max_rate).unwrap_or(0.0),
            )
        })
        .collect();
    let hi = rates.iter().map(|r| r.2).fold(0f64, f64::max).max(1.0) * 1.25;
    let n = coord(rates.len().max(1));
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{scn}: maximum sustainable rate (requests/s)"),
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(10)
        .y_label_area_size(52)
        .build_cartesian_2d(0f64..n, 0f64..hi)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (i, (arm, label, rate)) in rates.iter().enumerate() {
        let x = coord(i);
        let col = color(arm);
        chart.draw_series(std::iter::once(Rectangle::new(
            [(x + 0.12, 0.0), (x + 0.88, *rate)],
            col.filled(),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("{rate:.0}"),
            (x + 0.2, rate + hi * 0.02),
            ("sans-serif", 12),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            label.clone(),
            (x + 0.14, hi * (0.97 - 0.06 * coord(i % 2))),
            ("sans-serif", 10),
        )))?;
    }
    Ok(())
}
