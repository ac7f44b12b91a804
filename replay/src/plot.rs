//! A picture of a replay: live bytes and each allocator's reserved bytes over the trace, one
//! curve each, the peaks marked (plotters, SVG).

use crate::report::Row;
use anyhow::{Context, Result};
use plotters::prelude::*;
use std::path::Path;

/// The curves' colours: live bytes, gmlake, PyTorch native, PyTorch expandable segments.
const COLOURS: [RGBColor; 4] = [
    RGBColor(120, 120, 120),
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
];

/// Draws `row`'s curves (the row must come from a replay with `Options::series`) into `out`: an
/// SVG file, or for a `.html` name a page holding it; 1000 by 560 pixels, x the event index, y
/// gigabytes (10^9 bytes), each allocator's peak marked with a dot and given in the legend.
///
/// # Errors
/// A row without curves, or a file that cannot be written.
pub fn plot(row: &Row, out: &Path) -> Result<()> {
    let svg = svg(row)?;
    let html = out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("html"));
    let text = if html {
        format!("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head><body>\n{svg}\n</body></html>\n", row.trace)
    } else {
        svg
    };
    std::fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))
}

/// The SVG text of [`plot`].
fn svg(row: &Row) -> Result<String> {
    let series = row
        .series
        .as_ref()
        .context("the replay kept no curves (Options::series)")?;
    let gb = |b: u64| b as f64 / 1e9;
    let mut curves = vec![("live bytes".to_string(), &series.live)];
    curves.extend(
        series
            .reserved
            .iter()
            .map(|(n, c)| (format!("{n} reserved"), c)),
    );
    let x_max = curves
        .iter()
        .flat_map(|(_, c)| c.last())
        .map(|p| p.0)
        .max()
        .unwrap_or(1)
        .max(1);
    let y_max = curves
        .iter()
        .flat_map(|(_, c)| c.iter())
        .map(|p| gb(p.1))
        .fold(0.0, f64::max);
    let mut text = String::new();
    let root = SVGBackend::with_string(&mut text, (1000, 560)).into_drawing_area();
    let draw = |e| anyhow::anyhow!("drawing the plot: {e}");
    root.fill(&WHITE).map_err(draw)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{}: memory over the trace", row.trace),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0u64..x_max, 0f64..(y_max * 1.08).max(1e-3))
        .map_err(draw)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("event")
        .y_desc("GB")
        .draw()
        .map_err(draw)?;
    for (i, (name, curve)) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let peak = curve.iter().max_by_key(|p| p.1).copied().unwrap_or((0, 0));
        chart
            .draw_series(LineSeries::new(
                curve.iter().map(|&(x, y)| (x, gb(y))),
                colour.stroke_width(2),
            ))
            .map_err(draw)?
            .label(format!("{name} (peak {:.2} GB)", gb(peak.1)))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        chart
            .draw_series(std::iter::once(Circle::new(
                (peak.0, gb(peak.1)),
                5,
                colour.filled(),
            )))
            .map_err(draw)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(draw)?;
    root.present().map_err(draw)?;
    drop(chart);
    drop(root);
    Ok(text)
}
