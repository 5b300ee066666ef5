//! `metrics.jsonl` (one JSON object per logged step, appended as training goes) and the loss-curve plot drawn
//! from it at the end.

use std::path::Path;

use anyhow::Result;
#[cfg(feature = "plots")]
use plotters::prelude::*;
use serde_json::Value;

use crate::fs::{read_json_lines, JsonLines};

pub const METRICS_FILE: &str = "metrics.jsonl";
pub const PLOT_FILE: &str = "loss.svg";

/// The metrics file of a run: a fresh one, or, when resuming from `resume_step`, the existing one without the
/// lines of later steps (those steps will be run again). Lines are kept verbatim, so a resumed run's log reads
/// exactly like an uninterrupted one's.
pub fn open_log(output_dir: &Path, resume_step: Option<usize>) -> Result<JsonLines> {
    let keep = |v: &Value| resume_step.is_some_and(|step| v["step"].as_u64().is_some_and(|s| s as usize <= step));
    Ok(JsonLines::open(&output_dir.join(METRICS_FILE), keep)?.0)
}

/// Every record of a metrics file.
pub fn read(path: &Path) -> Result<Vec<Value>> {
    Ok(read_json_lines(path)?.into_iter().map(|(_, v)| v).collect())
}

/// Without the `plots` feature there is no plot to draw.
#[cfg(not(feature = "plots"))]
pub fn plot(_metrics: &Path, _out: &Path) -> Result<()> {
    Ok(())
}

/// Draws the training loss (and eval loss, where logged) against the step into an SVG.
#[cfg(feature = "plots")]
pub fn plot(metrics: &Path, out: &Path) -> Result<()> {
    let records = read(metrics)?;
    let series = |key: &str| -> Vec<(f64, f64)> {
        records.iter().filter_map(|r| Some((r["step"].as_f64()?, r[key].as_f64()?))).collect()
    };
    let (train, eval) = (series("loss"), series("eval_loss"));
    let all = || train.iter().chain(&eval);
    let x_max = all().map(|p| p.0).fold(1.0, f64::max);
    let (y_min, y_max) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let (y_min, y_max) = if y_min.is_finite() { (y_min, y_max.max(y_min + 1e-3)) } else { (0.0, 1.0) };
    let pad = (y_max - y_min) * 0.05;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("loss", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_max, (y_min - pad)..(y_max + pad))?;
        chart.configure_mesh().x_desc("step").y_desc("loss").draw()?;
        chart
            .draw_series(LineSeries::new(train, &BLUE))?
            .label("train")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE));
        if !eval.is_empty() {
            chart
                .draw_series(LineSeries::new(eval.clone(), RED.stroke_width(2)))?
                .label("eval")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED));
            chart.draw_series(eval.iter().map(|&p| Circle::new(p, 3, RED.filled())))?;
        }
        chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw()?;
        root.present()?;
    }
    crate::fs::write_atomic(out, |p| Ok(std::fs::write(p, &svg)?))
}
