//! Renders what `loadtests --json` measured as an SVG: throughput and p99
//! latency by concurrency, one line per target (direct, mcpgate,
//! ContextForge), both axes logarithmic — the targets differ by two orders of
//! magnitude. Given several result files (rounds of the same run), each
//! point is the median over them.
//!
//! target/release/chart docs/peer-bench.svg docs/peer-bench/round*.json

use anyhow::{Context, bail};
use plotters::coord::Shift;
use plotters::prelude::*;

/// One target's points: (concurrency, calls/s, p99 ms).
type Series = (String, Vec<(f64, f64, f64)>);
/// The rounds' (calls/s, p99 ms) of one (target, concurrency).
type Rounds = ((String, u64), Vec<(f64, f64)>);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [output, inputs @ ..] = args.as_slice() else {
        bail!("usage: chart <chart.svg> <results.json>...");
    };
    if inputs.is_empty() {
        bail!("usage: chart <chart.svg> <results.json>...");
    }
    // (target, concurrency) → the rounds' (calls/s, p99 ms), in first-seen order.
    let mut rounds: Vec<Rounds> = Vec::new();
    let mut doc = serde_json::Value::Null;
    for input in inputs {
        doc = serde_json::from_str(
            &std::fs::read_to_string(input).with_context(|| format!("reading {input}"))?,
        )?;
        for run in doc["runs"].as_array().context("no runs")? {
            let (Some(target), Some(c), Some(calls), Some(p99)) = (
                run["target"].as_str(),
                run["concurrency"].as_u64(),
                run["calls_per_s"].as_f64(),
                run["p99_ms"].as_f64(),
            ) else {
                continue; // a failed run has no numbers
            };
            let key = (target.to_owned(), c);
            match rounds.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push((calls, p99)),
                None => rounds.push((key, vec![(calls, p99)])),
            }
        }
    }
    let mut series: Vec<Series> = Vec::new();
    for ((target, c), values) in rounds {
        let point = (
            c as f64,
            median(values.iter().map(|v| v.0)),
            median(values.iter().map(|v| v.1)),
        );
        match series.iter_mut().find(|(name, _)| *name == target) {
            Some((_, points)) => points.push(point),
            None => series.push((target, vec![point])),
        }
    }
    if series.is_empty() {
        bail!("no completed runs in {inputs:?}");
    }
    let root = SVGBackend::new(output, (1000, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "tools/call, {} s per point, {}, median of {} round(s)",
        doc["seconds"],
        doc["protocol"].as_str().unwrap_or(""),
        inputs.len()
    );
    let root = root.titled(&title, ("sans-serif", 16))?;
    let (left, right) = root.split_horizontally(500);
    panel(
        &left,
        &series,
        "calls/s (higher is better)",
        |p| p.1,
        SeriesLabelPosition::MiddleRight,
    )?;
    panel(
        &right,
        &series,
        "p99 latency, ms (lower is better)",
        |p| p.2,
        SeriesLabelPosition::UpperLeft,
    )?;
    root.present()?;
    println!("wrote {output}");
    Ok(())
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
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
    legend: SeriesLabelPosition,
) -> anyhow::Result<()> {
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (mut c_max, mut lo, mut hi) = (1.0f64, f64::MAX, f64::MIN);
    let mut concurrencies: Vec<f64> = Vec::new();
    for p in points {
        if !concurrencies.contains(&p.0) {
            concurrencies.push(p.0);
        }
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
            (0.8f64..c_max * 1.25)
                .log_scale()
                .with_key_points(concurrencies),
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
        .position(legend)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
