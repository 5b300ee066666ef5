//! The zero-shot vs tuned report (written by `eval`, read by `hub` for the model card): per task and metric the
//! two values, their difference and the prompt's trainable parameters, written as JSON (for tools), Markdown (for
//! people) and an SVG bar chart.

use std::path::Path;

use anyhow::{Context, Result};
#[cfg(feature = "plots")]
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::fs::write_atomic;

pub const REPORT_JSON: &str = "report.json";
pub const REPORT_MD: &str = "report.md";
pub const REPORT_SVG: &str = "report.svg";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The model as given (a directory, `demo`).
    pub model: String,
    /// How candidates were scored (`sum`, `per_char`, ...).
    pub mode: String,
    pub tasks: Vec<TaskResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub task: String,
    /// The data file the items came from.
    pub data: String,
    /// Items scored (MuSeRC: answer options; RuCoS: queries).
    pub items: usize,
    pub zero_shot_format: String,
    /// More zero-shot templates, scored as `zero-shot-t2`, `zero-shot-t3`, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_zero_shot_formats: Vec<String>,
    pub tuned_format: Option<String>,
    pub trainable_parameters: Option<i64>,
    pub metrics: Vec<MetricRow>,
    /// Every setting scored (zero-shot, each k-shot, tuned) under every scoring mode (classification).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settings: Vec<SettingResult>,
    /// The spread of the headline metrics over the settings of a group (several templates or seeds).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spreads: Vec<Spread>,
}

/// One metric over the settings of a group under the headline mode: how much a template or a seed moves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub group: String,
    pub settings: usize,
    pub metric: String,
    pub mean: f64,
    /// Sample standard deviation over the settings.
    pub sd: f64,
    pub min: f64,
    pub max: f64,
}

/// One setting's metrics under each scoring mode, from the same forwards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingResult {
    /// `zero-shot`, `zero-shot-t2` (a second template), `5-shot`, `5-shot-s7` (another seed), `tuned`.
    pub setting: String,
    /// What the setting varies within: `zero-shot` (templates), `5-shot` (seeds), `tuned`.
    #[serde(default)]
    pub group: String,
    /// Demonstrations asked for per item.
    pub shots: usize,
    /// Items that dropped demonstrations to fit the model's window, and how many they dropped in all.
    pub items_dropping_shots: usize,
    pub dropped_shots: usize,
    pub scores: Vec<ModeScore>,
}

/// A metric under one scoring mode, with its bootstrap standard error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModeScore {
    pub mode: String,
    pub metric: String,
    pub value: f64,
    pub stderr: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    pub metric: String,
    pub zero_shot: f64,
    pub tuned: Option<f64>,
    /// tuned − zero-shot.
    pub delta: Option<f64>,
    /// Bootstrap standard errors of the two values (classification; see `eval::stats`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zero_shot_stderr: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuned_stderr: Option<f64>,
    /// The paired bootstrap 95% interval of tuned − zero-shot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_interval: Option<(f64, f64)>,
    /// The metric of always giving the most frequent gold answer, and of answering at random, on the same items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub majority: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chance: Option<f64>,
    /// Text-to-text: the metric of giving each input back unchanged (RUSSE 2022's "duplicate" baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_input: Option<f64>,
}

impl MetricRow {
    pub fn new(metric: &str, zero_shot: f64, tuned: Option<f64>) -> Self {
        Self {
            metric: metric.into(),
            zero_shot,
            tuned,
            delta: tuned.map(|t| t - zero_shot),
            zero_shot_stderr: None,
            tuned_stderr: None,
            delta_interval: None,
            majority: None,
            chance: None,
            copy_input: None,
        }
    }

    /// Whether the difference's 95% interval excludes 0 (`None` without an interval).
    pub fn significant(&self) -> Option<bool> {
        self.delta_interval.map(|(lo, hi)| lo > 0.0 || hi < 0.0)
    }
}

impl Report {
    /// The Markdown table: one row per task and metric.
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "# Zero-shot vs tuned\n\nModel: `{}`; candidates scored by `{}`.\n\n\
             | task | metric | zero-shot | tuned | Δ [95% CI] | majority | chance | trainable params | items |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
            self.model, self.mode
        );
        let with_stderr = |v: f64, e: Option<f64>| match e {
            Some(e) => format!("{v:.3} ± {e:.3}"),
            None => format!("{v:.3}"),
        };
        let opt = |v: Option<f64>, signed: bool| match v {
            Some(v) if signed => format!("{v:+.3}"),
            Some(v) => format!("{v:.3}"),
            None => "—".into(),
        };
        for t in &self.tasks {
            for m in &t.metrics {
                let delta = match (m.delta, m.delta_interval) {
                    (Some(d), Some((lo, hi))) => {
                        let mark = if m.significant() == Some(true) { " *" } else { "" };
                        format!("{d:+.3} [{lo:+.3}, {hi:+.3}]{mark}")
                    }
                    (d, _) => opt(d, true),
                };
                md += &format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    t.task,
                    m.metric,
                    with_stderr(m.zero_shot, m.zero_shot_stderr),
                    m.tuned.map_or("—".into(), |v| with_stderr(v, m.tuned_stderr)),
                    delta,
                    opt(m.majority, false),
                    opt(m.chance, false),
                    t.trainable_parameters.map_or("—".into(), |n| n.to_string()),
                    t.items
                );
            }
        }
        if self.tasks.iter().flat_map(|t| &t.metrics).any(|m| m.zero_shot_stderr.is_some()) {
            md += "\n± is the bootstrap standard error (items resampled 1000 times); Δ's interval is the paired \
                   bootstrap 95% interval of tuned − zero-shot, * where it excludes 0. Majority: always the most \
                   frequent gold answer; chance: uniformly random answers; both on the same items.\n";
        }
        for t in &self.tasks {
            let copies: Vec<String> =
                t.metrics.iter().filter_map(|m| m.copy_input.map(|v| format!("{} {v:.3}", m.metric))).collect();
            if !copies.is_empty() {
                md += &format!(
                    "\n{}: zero-shot is the bare model reading the format without its trainable tokens; giving each \
                     input back unchanged scores {}.\n",
                    t.task,
                    copies.join(", ")
                );
            }
        }
        md += &self.settings_markdown();
        md += &self.spreads_markdown();
        md += "\nFormats:\n\n";
        for t in &self.tasks {
            md += &format!("- {} zero-shot: `{:?}`\n", t.task, t.zero_shot_format);
            for (j, f) in t.more_zero_shot_formats.iter().enumerate() {
                md += &format!("- {} zero-shot-t{}: `{f:?}`\n", t.task, j + 2);
            }
            if let Some(f) = &t.tuned_format {
                md += &format!("- {} tuned: `{f:?}`\n", t.task);
            }
        }
        md
    }

    /// The table of every setting (rows) under every scoring mode (columns), `value ± stderr`; empty without
    /// settings.
    fn settings_markdown(&self) -> String {
        let mut modes: Vec<&str> = Vec::new();
        for s in self.tasks.iter().flat_map(|t| &t.settings).flat_map(|s| &s.scores) {
            if !modes.contains(&s.mode.as_str()) {
                modes.push(&s.mode);
            }
        }
        if modes.is_empty() {
            return String::new();
        }
        let mut md = format!(
            "\n## Every setting and scoring mode\n\nThe table above uses `{}`. sum = lm-eval `acc`, per_char = \
             `acc_norm`, per_byte = `acc_bytes`; ± is the bootstrap standard error.\n\n| task | setting | metric | {} \
             | demonstrations dropped |\n|---|---|---|{}---:|\n",
            self.mode,
            modes.join(" | "),
            "---:|".repeat(modes.len())
        );
        for t in &self.tasks {
            for s in &t.settings {
                let mut metrics: Vec<&str> = Vec::new();
                for m in &s.scores {
                    if !metrics.contains(&m.metric.as_str()) {
                        metrics.push(&m.metric);
                    }
                }
                for metric in metrics {
                    let cells: Vec<String> = modes
                        .iter()
                        .map(|mode| {
                            s.scores
                                .iter()
                                .find(|m| m.metric == metric && m.mode == *mode)
                                .map_or("—".into(), |m| format!("{:.3} ± {:.3}", m.value, m.stderr))
                        })
                        .collect();
                    let dropped = if s.shots == 0 {
                        "—".to_string()
                    } else {
                        format!("{} in {} items", s.dropped_shots, s.items_dropping_shots)
                    };
                    md += &format!("| {} | {} | {metric} | {} | {dropped} |\n", t.task, s.setting, cells.join(" | "));
                }
            }
        }
        md
    }

    /// The table of spreads over templates and seeds; empty without any.
    fn spreads_markdown(&self) -> String {
        if self.tasks.iter().all(|t| t.spreads.is_empty()) {
            return String::new();
        }
        let mut md = format!(
            "\n## Spread over templates and seeds\n\nUnder `{}`: mean ± standard deviation over the settings of a \
             group, then the lowest and highest.\n\n| task | group | settings | metric | mean ± sd | min | max |\n\
             |---|---|---:|---|---:|---:|---:|\n",
            self.mode
        );
        for t in &self.tasks {
            for s in &t.spreads {
                md += &format!(
                    "| {} | {} | {} | {} | {:.3} ± {:.3} | {:.3} | {:.3} |\n",
                    t.task, s.group, s.settings, s.metric, s.mean, s.sd, s.min, s.max
                );
            }
        }
        md
    }

    /// report.svg (grouped bars per task and metric) in `dir`; without the `plots` feature, nothing.
    pub fn write_svg(&self, dir: &Path) -> Result<()> {
        #[cfg(feature = "plots")]
        {
            let svg = self.svg()?;
            write_atomic(&dir.join(REPORT_SVG), |p| Ok(std::fs::write(p, svg)?))
        }
        #[cfg(not(feature = "plots"))]
        {
            let _ = dir;
            Ok(())
        }
    }

    /// Grouped bars, zero-shot and tuned, for every task and metric.
    #[cfg(feature = "plots")]
    pub fn svg(&self) -> Result<String> {
        let bars: Vec<(String, f64, Option<f64>)> = self
            .tasks
            .iter()
            .flat_map(|t| t.metrics.iter().map(move |m| (format!("{} {}", t.task, m.metric), m.zero_shot, m.tuned)))
            .collect();
        let rows: Vec<&MetricRow> = self.tasks.iter().flat_map(|t| &t.metrics).collect();
        let values = || {
            bars.iter().zip(&rows).flat_map(|(b, m)| {
                let up = |v: f64, e: Option<f64>| v + e.unwrap_or(0.0);
                [
                    b.1,
                    up(b.1, m.zero_shot_stderr),
                    b.2.map_or(0.0, |t| up(t, m.tuned_stderr)),
                    m.majority.unwrap_or(0.0),
                ]
            })
        };
        // Accuracy-like metrics live in [0, 1] (MCC down to −1); chrF and BLEU in [0, 100].
        let (y_min, y_max) = (values().fold(0.0, f64::min), values().fold(1.0, f64::max));
        let mut svg = String::new();
        {
            let width = (160 * bars.len() as u32).max(480);
            let root = SVGBackend::with_string(&mut svg, (width, 420)).into_drawing_area();
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption("zero-shot vs tuned", ("sans-serif", 22))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(48)
                .build_cartesian_2d(0.0..bars.len().max(1) as f64, y_min..y_max * 1.05)?;
            let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(bars.len().max(1))
                .x_label_formatter(&|x| names.get(x.floor() as usize).cloned().unwrap_or_default())
                .y_desc("score")
                .draw()?;
            let bar = |i: usize, offset: f64, v: f64, color: RGBColor| {
                let x = i as f64 + offset;
                Rectangle::new([(x, 0.0), (x + 0.35, v)], color.filled())
            };
            chart
                .draw_series(bars.iter().enumerate().map(|(i, b)| bar(i, 0.12, b.1, RGBColor(150, 150, 150))))?
                .label("zero-shot")
                .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], RGBColor(150, 150, 150).filled()));
            chart
                .draw_series(bars.iter().enumerate().filter_map(|(i, b)| Some(bar(i, 0.5, b.2?, BLUE))))?
                .label("tuned")
                .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], BLUE.filled()));
            // ± one standard error on each bar, its value above it, and the majority-class level as a dashed line.
            let mut marks: Vec<(f64, f64, Option<f64>)> = Vec::new();
            for (i, (b, m)) in bars.iter().zip(&rows).enumerate() {
                marks.push((i as f64 + 0.295, b.1, m.zero_shot_stderr));
                if let Some(t) = b.2 {
                    marks.push((i as f64 + 0.675, t, m.tuned_stderr));
                }
            }
            chart.draw_series(marks.iter().filter_map(|&(x, v, e)| {
                let e = e?;
                Some(PathElement::new([(x, v - e), (x, v + e)], BLACK.stroke_width(2)))
            }))?;
            chart.draw_series(marks.iter().map(|&(x, v, e)| {
                Text::new(
                    format!("{v:.3}"),
                    (x - 0.15, v + e.unwrap_or(0.0) + 0.01 * (y_max - y_min)),
                    ("sans-serif", 12),
                )
            }))?;
            let majority: Vec<(usize, f64)> =
                rows.iter().enumerate().filter_map(|(i, m)| Some((i, m.majority?))).collect();
            if !majority.is_empty() {
                chart
                    .draw_series(majority.iter().map(|&(i, v)| {
                        plotters::element::DashedPathElement::new(
                            [(i as f64 + 0.05, v), (i as f64 + 0.95, v)],
                            6,
                            4,
                            RED.stroke_width(2),
                        )
                    }))?
                    .label("majority class")
                    .legend(|(x, y)| PathElement::new([(x, y), (x + 12, y)], RED.stroke_width(2)));
            }
            chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw()?;
            root.present()?;
        }
        Ok(svg)
    }

    /// Writes report.json, report.md and report.svg into `dir` (each atomically).
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let json = serde_json::to_string_pretty(self)?;
        write_atomic(&dir.join(REPORT_JSON), |p| Ok(std::fs::write(p, json)?))?;
        write_atomic(&dir.join(REPORT_MD), |p| Ok(std::fs::write(p, self.markdown())?))?;
        self.write_svg(dir)
    }
}
