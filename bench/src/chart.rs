//! The results as a picture: per row, the speed-up over CPython and ours / limit, as
//! horizontal bars from 1× on log scales, written as an SVG file beside the JSON.
//!
//! Plotters with its SVG backend only: text goes into the file as `<text>` elements (laid out
//! with a rough estimate of its width), so no font library is needed to draw it.

use crate::report::{Report, RowResult, ratio};
use plotters::coord::Shift;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// Bars run from 1× to the value; values are clamped to the axis so that a wild ratio still
/// shows (its label gives the true figure).
const SPEEDUP_AXIS: (f64, f64) = (0.01, 10_000.0);
const LIMIT_AXIS: (f64, f64) = (0.1, 1_000.0);

const ROW_HEIGHT: u32 = 20;
const LABEL_WIDTH: u32 = 380;
const PANEL_WIDTH: u32 = 460;
const TOP: u32 = 60;
const BOTTOM: u32 = 50;

const FASTER: RGBColor = RGBColor(46, 139, 87);
const SLOWER: RGBColor = RGBColor(205, 92, 92);
const NEAR_LIMIT: RGBColor = RGBColor(70, 130, 180);
const FAR_FROM_LIMIT: RGBColor = RGBColor(230, 145, 56);

/// The rows the chart shows: those with at least one ratio (reference rows have none).
fn charted(report: &Report) -> Vec<&RowResult> {
    report.rows.iter().filter(|r| r.speedup_over_cpython.is_some() || r.ours_over_limit.is_some()).collect()
}

/// An axis tick: 0.01×, 0.1×, 1×, 10×, ...
fn axis_label(x: f64) -> String {
    if x >= 1.0 { format!("{x:.0}×") } else { format!("{}×", (x * 1000.0).round() / 1000.0) }
}

fn label(r: &RowResult) -> String {
    format!("{} [{}]", r.id, r.unit_label)
}

/// Writes the chart of `report` to `path` as SVG.
pub fn write_svg(report: &Report, path: &Path) -> Result<(), String> {
    let rows = charted(report);
    let n = rows.len().max(1) as u32;
    let width = LABEL_WIDTH + 2 * PANEL_WIDTH;
    let height = TOP + n * ROW_HEIGHT + BOTTOM;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let root = SVGBackend::new(path, (width, height)).into_drawing_area();
    draw(&root, report, &rows).map_err(|e| format!("chart {}: {e}", path.display()))?;
    root.present().map_err(|e| format!("chart {}: {e}", path.display()))
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw(root: &DrawingArea<SVGBackend<'_>, Shift>, report: &Report, rows: &[&RowResult]) -> DrawResult {
    root.fill(&WHITE)?;
    let kind = if report.quick { "quick smoke run, times not meaningful" } else { "full run" };
    let title = format!(
        "multiprocess: speed-up over CPython and distance to the machine's limit ({kind}, {} rounds, commit {}, {})",
        report.rounds, report.machine.git_commit, report.machine.started_utc
    );
    root.draw(&Text::new(title, (10, 10), ("sans-serif", 16).into_font()))?;
    // The left panel carries the row labels in its own label area, so that both panels have
    // plotting areas of one height and their rows line up.
    let (left, right) = root.split_horizontally(LABEL_WIDTH + PANEL_WIDTH);

    panel(
        &left,
        rows,
        "speed-up over CPython (×, log; above 1: multiprocess is faster)",
        LABEL_WIDTH,
        SPEEDUP_AXIS,
        |r| r.speedup_over_cpython.map(|s| s.median),
        |v| if v >= 1.0 { FASTER } else { SLOWER },
    )?;
    panel(
        &right,
        rows,
        "ours / limit (×, log; 1 is the machine's limit)",
        0,
        LIMIT_AXIS,
        |r| r.ours_over_limit.map(|s| s.median),
        |v| if v <= 1.5 { NEAR_LIMIT } else { FAR_FROM_LIMIT },
    )?;
    Ok(())
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    rows: &[&RowResult],
    caption: &str,
    label_width: u32,
    (lo, hi): (f64, f64),
    value: impl Fn(&RowResult) -> Option<f64>,
    colour: impl Fn(f64) -> RGBColor,
) -> DrawResult {
    let n = rows.len() as i32;
    let mut chart = ChartBuilder::on(area)
        .margin_top(TOP as i32 - 40)
        .margin_right(20)
        .margin_bottom(10)
        .caption(caption, ("sans-serif", 13))
        .x_label_area_size(30)
        .y_label_area_size(label_width)
        .build_cartesian_2d((lo..hi).log_scale(), (0..n).into_segmented())?;
    // Row i of the table is drawn at segment n - 1 - i: the first row on top.
    let row_label = |y: &SegmentValue<i32>| match y {
        SegmentValue::CenterOf(k) if (0..n).contains(k) => label(rows[(n - 1 - k) as usize]),
        _ => String::new(),
    };
    let mut mesh = chart.configure_mesh();
    mesh.disable_y_mesh()
        .x_label_formatter(&|x| axis_label(*x))
        .x_labels(6)
        .y_labels(rows.len())
        .y_label_formatter(&row_label)
        .label_style(("sans-serif", 11));
    if label_width == 0 {
        mesh.disable_y_axis();
    } else {
        mesh.y_label_style(("monospace", 11));
    }
    mesh.draw()?;
    // The line at 1×: CPython's speed on the left, the limit on the right.
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(1.0, SegmentValue::Exact(0)), (1.0, SegmentValue::Exact(n))],
        BLACK.stroke_width(1),
    )))?;
    for (i, r) in rows.iter().enumerate() {
        let Some(v) = value(r).filter(|v| v.is_finite() && *v > 0.0) else { continue };
        let i = n - 1 - i as i32;
        let shown = v.clamp(lo, hi);
        let mut bar =
            Rectangle::new([(1.0, SegmentValue::Exact(i)), (shown, SegmentValue::Exact(i + 1))], colour(v).filled());
        bar.set_margin(2, 2, 0, 0);
        chart.draw_series(std::iter::once(bar))?;
        // The figure just past the end of the bar, on the side it grows to.
        let (x, h) =
            if shown >= 1.0 { ((shown * 1.15).min(hi), HPos::Left) } else { ((shown / 1.15).max(lo), HPos::Right) };
        let style = TextStyle::from(("sans-serif", 11).into_font()).pos(Pos::new(h, VPos::Center));
        chart.draw_series(std::iter::once(Text::new(
            format!("{}×", ratio(v)),
            (x, SegmentValue::CenterOf(i)),
            style,
        )))?;
    }
    Ok(())
}
