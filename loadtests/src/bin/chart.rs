//! Renders what `loadtests --json` measured as an SVG: throughput and p99
//! latency by concurrency, one line per target (direct, mcpgate,
//! ContextForge), both axes logarithmic — the targets differ by two orders of
//! magnitude.
//!
//! cargo run --release -p loadtests --bin chart -- docs/peer-bench-2026-12-07.json docs/peer-bench-2026-12-07.svg

use anyhow::{Context, bail};
use plotters::coord::Shift;
use plotters::prelude::*;

/// One target's points: (concurrency, calls/s, p99 ms).
type Series = (String, Vec<(f64, f64, f64)>);

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(input), Some(output)) = (args.next(), args.next()) else {
        bail!("usage: chart <results.json> <chart.svg>");
    };
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&input).with_context(|| format!("reading {input}"))?,
    )?;
    let mut series: Vec<Series> = Vec::new();
    for run in doc["runs"].as_array().context("no runs")? {
        let (Some(target), Some(c), Some(calls), Some(p99)) = (
            run["target"].as_str(),
            run["concurrency"].as_f64(),
            run["calls_per_s"].as_f64(),
            run["p99_ms"].as_f64(),
        ) else {
            continue; // a failed run has no numbers
        };
        match series.iter_mut().find(|(name, _)| name == target) {
            Some((_, points)) => points.push((c, calls, p99)),
            None => series.push((target.to_owned(), vec![(c, calls, p99)])),
        }
    }
    if series.is_empty() {
        bail!("{input} holds no completed runs");
    }
    let root = SVGBackend::new(&output, (1000, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "tools/call, {} s per point, {}",
        doc["seconds"],
        doc["protocol"].as_str().unwrap_or("")
    );
    let root = root.titled(&title, ("sans-serif", 16))?;
    let (left, right) = root.split_horizontally(500);
    panel(&left, &series, "calls/s (higher is better)", |p| p.1)?;
    panel(&right, &series, "p99 latency, ms (lower is better)", |p| {
        p.2
    })?;
    root.present()?;
    println!("wrote {output}");
    Ok(())
}

fn colour(target: &str) -> RGBColor {
    match target {
        "direct" => RGBColor(110, 110, 110),
        "mcpgate" => RGBColor(31, 119, 180),
        "contextforge" => RGBColor(214, 39, 40),
        _ => RGBColor(44, 160, 44),
    }
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    series: &[Series],
    caption: &str,
    value: fn(&(f64, f64, f64)) -> f64,
) -> anyhow::Result<()> {
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (mut c_max, mut lo, mut hi) = (1.0f64, f64::MAX, f64::MIN);
    for p in points {
        c_max = c_max.max(p.0);
        lo = lo.min(value(p));
        hi = hi.max(value(p));
    }
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(
            (0.8f64..c_max * 1.25).log_scale(),
            (lo / 2.0..hi * 2.0).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("concurrent sessions")
        .x_label_formatter(&|c| format!("{c:.0}"))
        .y_label_formatter(&|v| {
            if *v >= 10.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            }
        })
        .draw()?;
    for (name, points) in series {
        let style = colour(name).stroke_width(2);
        chart
            .draw_series(
                LineSeries::new(points.iter().map(|p| (p.0, value(p))), style).point_size(4),
            )?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
