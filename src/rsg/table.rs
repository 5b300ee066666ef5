//! The benchmark's results table in the CPT paper's layout: one row per approach (zero-shot, prompt tuning), a
//! column per task in the leaderboard's order, values ×100, and the leaderboard's total score.

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::fs::write_atomic;
use crate::report::{MetricRow, Report, TaskResult, REPORT_JSON, REPORT_MD};
use crate::task::{Metric, RsgTask};

/// What one task of the benchmark gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskOutcome {
    pub task: RsgTask,
    /// The official metrics on the validation split, zero-shot and with the tuned prompt (empty on failure).
    pub zero_shot: Vec<Metric>,
    pub tuned: Vec<Metric>,
    pub items: usize,
    pub trainable_parameters: Option<i64>,
    /// Wall time of training and evaluation, summed over the runs that did the work.
    pub seconds: f64,
    /// Why the task has no results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The whole benchmark: the model and every task's outcome, in the leaderboard's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Benchmark {
    pub model: String,
    pub tasks: Vec<TaskOutcome>,
    /// The leaderboard total of each approach over the tasks with results (`None` without any).
    pub total_zero_shot: Option<f64>,
    pub total_tuned: Option<f64>,
}

/// One approach's metrics of a task: its zero-shot or its tuned ones.
type Pick = fn(&TaskOutcome) -> &[Metric];

/// A task's score on the leaderboard: its metric, or the mean of its two.
pub fn task_score(metrics: &[Metric]) -> Option<f64> {
    (!metrics.is_empty()).then(|| metrics.iter().map(|m| m.value).sum::<f64>() / metrics.len() as f64)
}

/// The leaderboard's total: the mean over tasks of each task's score (two-metric tasks averaged first).
pub fn total_score(per_task: &[&[Metric]]) -> Option<f64> {
    let scores: Vec<f64> = per_task.iter().filter_map(|m| task_score(m)).collect();
    (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64)
}

impl Benchmark {
    pub fn new(model: String, mut tasks: Vec<TaskOutcome>) -> Self {
        tasks.sort_by_key(|t| RsgTask::ALL.iter().position(|x| *x == t.task));
        let total = |pick: Pick| {
            let per_task: Vec<&[Metric]> = tasks.iter().map(pick).collect();
            total_score(&per_task)
        };
        let (total_zero_shot, total_tuned) = (total(|t| &t.zero_shot), total(|t| &t.tuned));
        Self { model, tasks, total_zero_shot, total_tuned }
    }

    /// The paper's table in Markdown, then per task its parameters, time and any error.
    pub fn markdown(&self) -> String {
        let cell = |metrics: &[Metric]| match metrics {
            [] => "—".to_string(),
            ms => ms
                .iter()
                .map(|m| match m.stderr {
                    Some(e) => format!("{:.1} ± {:.1}", m.value * 100.0, e * 100.0),
                    None => format!("{:.1}", m.value * 100.0),
                })
                .collect::<Vec<_>>()
                .join(" / "),
        };
        let heading = |t: &TaskOutcome| match t.task {
            RsgTask::Rcb => "RCB (F1/Acc)",
            RsgTask::Muserc => "MuSeRC (F1a/EM)",
            RsgTask::Rucos => "RuCoS (F1/EM)",
            other => other.name(),
        };
        let total = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{:.1}", v * 100.0));
        let done = self.tasks.iter().filter(|t| t.error.is_none()).count();
        let mut md = format!(
            "# Russian SuperGLUE: zero-shot vs prompt tuning\n\nModel: `{}`. Validation splits; values ×100, ± the \
             bootstrap standard error.",
            self.model
        );
        if done < RsgTask::ALL.len() {
            md += &format!(" Total over the {done} of 9 tasks with results (the leaderboard's total needs all nine).");
        }
        md += "\n\n| approach | Total score | ";
        md += &self.tasks.iter().map(heading).collect::<Vec<_>>().join(" | ");
        md += " |\n|---|---:|";
        md += &"---:|".repeat(self.tasks.len());
        md += "\n";
        let rows: [(&str, Option<f64>, Pick); 2] =
            [("zero-shot", self.total_zero_shot, |t| &t.zero_shot), ("prompt tuning", self.total_tuned, |t| &t.tuned)];
        for (name, total_value, pick) in rows {
            md += &format!("| {name} | {} | ", total(total_value));
            md += &self.tasks.iter().map(|t| cell(pick(t))).collect::<Vec<_>>().join(" | ");
            md += " |\n";
        }
        md += "\n| task | items | trainable params | seconds | status |\n|---|---:|---:|---:|---|\n";
        for t in &self.tasks {
            let params = t.trainable_parameters.map_or("—".to_string(), |n| n.to_string());
            let status = t.error.as_deref().map_or("ok".to_string(), |e| format!("failed: {}", e.replace('\n', " ")));
            md += &format!("| {} | {} | {params} | {:.1} | {status} |\n", t.task.name(), t.items, t.seconds);
        }
        md
    }

    /// report.json, report.md and report.svg (bars per task and metric) in `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_string_pretty(self)?;
        write_atomic(&dir.join(REPORT_JSON), |p| Ok(std::fs::write(p, json)?))?;
        write_atomic(&dir.join(REPORT_MD), |p| Ok(std::fs::write(p, self.markdown())?))?;
        let bars = Report {
            model: self.model.clone(),
            mode: "sum".into(),
            tasks: self
                .tasks
                .iter()
                .filter(|t| t.error.is_none())
                .map(|t| TaskResult {
                    task: t.task.name().into(),
                    data: String::new(),
                    items: t.items,
                    zero_shot_format: String::new(),
                    more_zero_shot_formats: vec![],
                    tuned_format: None,
                    trainable_parameters: t.trainable_parameters,
                    metrics: t
                        .zero_shot
                        .iter()
                        .map(|z| {
                            let tuned = t.tuned.iter().find(|m| m.name == z.name);
                            MetricRow {
                                zero_shot_stderr: z.stderr,
                                tuned_stderr: tuned.and_then(|m| m.stderr),
                                ..MetricRow::new(&z.name, z.value, tuned.map(|m| m.value))
                            }
                        })
                        .collect(),
                    settings: vec![],
                    spreads: vec![],
                })
                .collect(),
        };
        bars.write_svg(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, value: f64) -> Metric {
        Metric { name: name.into(), value, stderr: None }
    }

    #[test]
    fn the_total_averages_two_metric_tasks_first() {
        // A made-up table: LiDiRus' MCC is negative, RCB and MuSeRC have two metrics each.
        let lidirus = [m("mcc", -0.2)];
        let rcb = [m("macro_f1", 0.3), m("accuracy", 0.5)];
        let muserc = [m("f1a", 0.6), m("em", 0.2)];
        let terra = [m("accuracy", 0.7)];
        // Task scores: −0.2, 0.4, 0.4, 0.7 → mean 1.3 / 4 = 0.325.
        let total = total_score(&[&lidirus, &rcb, &muserc, &terra, &[]]).unwrap();
        assert!((total - 0.325).abs() < 1e-12, "{total}");
        assert_eq!(total_score(&[&[]]), None);
        let outcome = |task, zero: &[Metric], tuned: &[Metric]| TaskOutcome {
            task,
            zero_shot: zero.to_vec(),
            tuned: tuned.to_vec(),
            items: 4,
            trainable_parameters: Some(576),
            seconds: 1.0,
            error: None,
        };
        let bench = Benchmark::new(
            "demo".into(),
            vec![outcome(RsgTask::Terra, &terra, &[m("accuracy", 0.9)]), outcome(RsgTask::Rcb, &rcb, &rcb)],
        );
        // Leaderboard order: RCB before TERRa; totals (0.4 + 0.7) / 2 and (0.4 + 0.9) / 2.
        assert_eq!(bench.tasks[0].task, RsgTask::Rcb);
        assert!((bench.total_zero_shot.unwrap() - 0.55).abs() < 1e-12);
        assert!((bench.total_tuned.unwrap() - 0.65).abs() < 1e-12);
        let md = bench.markdown();
        assert!(md.contains("| approach | Total score | RCB (F1/Acc) | TERRa |"), "{md}");
        assert!(md.contains("| zero-shot | 55.0 | 30.0 / 50.0 | 70.0 |"), "{md}");
        assert!(md.contains("| prompt tuning | 65.0 | 30.0 / 50.0 | 90.0 |"), "{md}");
        assert!(md.contains("2 of 9 tasks"), "{md}");
    }
}
