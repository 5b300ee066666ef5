//! Multiple-choice tasks beyond the nine, without code: a YAML task file names the data files, the zero-shot
//! template(s), where the candidates and the gold answer are, the metrics and the truncation field. [`EvalTask`]
//! is either kind of task, for everything that evaluates or trains on one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, ensure, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::formats::Templates;
use super::tasks::{flat_submission, gold, right};
use super::{label_key, metrics, Item, Metric, RsgTask, TaskFormats, TaskItem};
use crate::config::Validate;
use crate::data::Record;
use crate::format::{Row, CANDIDATE_SLOT};

/// A user's multiple-choice task (see "Your own multiple-choice task" in docs/src/evaluation.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFile {
    /// The task's name in reports and file names.
    pub name: String,
    /// Split name (`train`, `val`, `test`) → data file (jsonl, csv or tsv, gzipped or not), relative to the task
    /// file.
    pub data: BTreeMap<String, PathBuf>,
    /// The zero-shot template, or several: each is scored, and the report gives their mean and spread.
    pub zero_shot: Templates,
    /// A template with trainable tokens, the starting point for `ruprompts train`.
    #[serde(default)]
    pub tunable: Option<String>,
    pub candidates: CandidatesSpec,
    pub gold: GoldSpec,
    #[serde(default = "default_metrics")]
    pub metrics: Vec<TaskMetric>,
    /// The class whose F1 and MCC are reported: a verbalizer's label, or a candidate index with `gold.index`
    /// (default: the first label in sorted order, or index 0).
    #[serde(default)]
    pub positive: Option<String>,
    /// The field cut from its end when an item does not fit in the model's context.
    #[serde(default)]
    pub truncation_field: Option<String>,
}

/// Where an item's candidate answers come from: `verbalizers` (label → text, the same for every item) or `field`
/// (a field of the row holding a list of texts, each put after `prefix`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidatesSpec {
    #[serde(default)]
    pub verbalizers: BTreeMap<String, String>,
    #[serde(default)]
    pub field: Option<String>,
    /// Put before each text of `field` (lm-evaluation-harness' `target_delimiter`).
    #[serde(default = "space")]
    pub prefix: String,
}

/// Where the gold answer is: `label` (a field whose value is one of the verbalizers' labels) or `index` (a field
/// holding the right candidate's 0-based index). A row without the field is unlabelled (a test split).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldSpec {
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub index: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskMetric {
    Accuracy,
    MacroF1,
    /// Matthews correlation of the positive class against the rest.
    Mcc,
    /// F1 of the positive class.
    F1,
}

impl TaskMetric {
    fn name(self) -> &'static str {
        match self {
            Self::Accuracy => "accuracy",
            Self::MacroF1 => "macro_f1",
            Self::Mcc => "mcc",
            Self::F1 => "f1",
        }
    }
}

fn default_metrics() -> Vec<TaskMetric> {
    vec![TaskMetric::Accuracy]
}

fn space() -> String {
    " ".into()
}

impl Validate for TaskFile {
    fn check(&self) -> std::result::Result<(), (String, String)> {
        let bad = |key: &str, reason: &str| Err((key.to_string(), reason.to_string()));
        if self.name.trim().is_empty() || self.name.contains(['/', '\\']) {
            return bad("name", "must be a non-empty name without slashes (it names the report's files)");
        }
        if self.zero_shot.all().is_empty() {
            return bad("zero_shot", "give a template or a list of them");
        }
        if self.data.is_empty() {
            return bad("data", "name at least one split: {val: path/to/val.jsonl}");
        }
        let c = &self.candidates;
        match (c.verbalizers.is_empty(), &c.field) {
            (true, None) => return bad("candidates", "give verbalizers (label → text) or field (a list per row)"),
            (false, Some(_)) => return bad("candidates", "give verbalizers or field, not both"),
            _ => {}
        }
        let texts: Vec<&String> = c.verbalizers.values().collect();
        if texts.iter().enumerate().any(|(i, t)| texts[..i].contains(t)) {
            return bad("candidates.verbalizers", "two labels have the same text: their items could not be told apart");
        }
        match (&self.gold.label, &self.gold.index) {
            (None, None) => return bad("gold", "give label (a field of verbalizer labels) or index (a field)"),
            (Some(_), Some(_)) => return bad("gold", "give label or index, not both"),
            (Some(_), None) if c.verbalizers.is_empty() => {
                return bad("gold.label", "labels are mapped through candidates.verbalizers: give them, or use index")
            }
            _ => {}
        }
        if self.metrics.is_empty() {
            return bad("metrics", "name at least one: accuracy, macro_f1, mcc, f1");
        }
        if let Some(p) = &self.positive {
            let known =
                if c.verbalizers.is_empty() { p.parse::<usize>().is_ok() } else { c.verbalizers.contains_key(p) };
            if !known {
                return bad("positive", "must be one of the verbalizers' labels (with gold.index: a candidate index)");
            }
        }
        Ok(())
    }
}

impl TaskFile {
    /// Reads and checks a task file (errors name the file, line and key); data paths become relative to it.
    pub fn load(path: &Path) -> Result<Self> {
        let mut task: Self = crate::config::load_valid(path, &[])?;
        let dir = path.parent().unwrap_or(Path::new(""));
        for file in task.data.values_mut() {
            *file = dir.join(&*file);
        }
        Ok(task)
    }

    /// The file of split `name`, when the task file names it.
    pub fn split(&self, name: &str) -> Option<&Path> {
        self.data.get(name).map(PathBuf::as_path)
    }

    /// The scoring side of the task (zero-shot templates, verbalizers, truncation field) as the evaluator takes it.
    pub fn formats(&self) -> TaskFormats {
        TaskFormats {
            task: None,
            zero_shot: self.zero_shot.clone(),
            tunable: self.tunable.clone().unwrap_or_default(),
            verbalizers: self.candidates.verbalizers.clone(),
            truncation_field: self.truncation_field.clone(),
        }
    }

    /// The index of the positive class among the candidates.
    fn positive(&self) -> usize {
        match &self.positive {
            None => 0,
            Some(p) if self.candidates.verbalizers.is_empty() => p.parse().unwrap_or(0),
            Some(p) => self.candidates.verbalizers.keys().position(|k| k == p).unwrap_or(0),
        }
    }

    fn items(&self, records: &[Record]) -> Result<Vec<TaskItem>> {
        let labels: Vec<&String> = self.candidates.verbalizers.keys().collect();
        records
            .iter()
            .map(|r| {
                let origin = &r.origin;
                let row: Row = r
                    .row
                    .iter()
                    .filter(|(k, v)| !v.is_object() && !v.is_array() && *k != CANDIDATE_SLOT)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let candidates: Vec<String> = match &self.candidates.field {
                    None => self.candidates.verbalizers.values().cloned().collect(),
                    Some(f) => {
                        let list = r.row.get(f).ok_or_else(|| anyhow!("{origin}: the row has no field '{f}'"))?;
                        let texts = list.as_array().ok_or_else(|| anyhow!("{origin}: field '{f}' is not a list"))?;
                        texts
                            .iter()
                            .map(|t| match t {
                                Value::String(s) => Ok(format!("{}{s}", self.candidates.prefix)),
                                other => bail!("{origin}: field '{f}' holds {other}, not text"),
                            })
                            .collect::<Result<_>>()?
                    }
                };
                ensure!(!candidates.is_empty(), "{origin}: no candidate answers");
                let gold = match (&self.gold.label, &self.gold.index) {
                    (Some(f), _) => r.row.get(f).map(|v| {
                        let key = label_key(v).unwrap_or_default();
                        labels.iter().position(|l| **l == key).ok_or_else(|| {
                            let known: Vec<&str> = labels.iter().map(|l| l.as_str()).collect();
                            anyhow!(
                                "{origin}: label {v} of field '{f}' has no verbalizer (labels: {})",
                                known.join(", ")
                            )
                        })
                    }),
                    (None, Some(f)) => r.row.get(f).map(|v| {
                        v.as_u64().map(|i| i as usize).filter(|&i| i < candidates.len()).ok_or_else(|| {
                            anyhow!(
                                "{origin}: field '{f}' should be a candidate index below {}, found {v}",
                                candidates.len()
                            )
                        })
                    }),
                    (None, None) => None,
                }
                .transpose()?;
                // The first of equal texts is the one predicted: a gold answer repeated later scores 0 whatever the
                // model does.
                if let Some(g) = gold {
                    if let Some(first) = candidates[..g].iter().position(|c| *c == candidates[g]) {
                        bail!(
                            "{origin}: candidates {first} and {g} (the gold answer) are the same text {:?}: the item \
                             could never be answered right; remove the repeat",
                            candidates[g]
                        );
                    }
                }
                let idx = r.row.get("idx").and_then(Value::as_u64).unwrap_or(origin.line as u64);
                let labels = match &self.candidates.field {
                    None => labels.iter().map(|l| json!(l)).collect(),
                    Some(_) => (0..candidates.len()).map(|i| json!(i)).collect(),
                };
                Ok(TaskItem {
                    item: Item { row, candidates, gold, origin: origin.clone(), shots: vec![] },
                    ids: vec![idx],
                    labels,
                    gold_texts: vec![],
                })
            })
            .collect()
    }

    fn metrics(&self, predictions: &[usize], golds: &[usize]) -> Vec<f64> {
        let positive = self.positive();
        let is_positive = |v: &[usize]| v.iter().map(|&i| i == positive).collect::<Vec<_>>();
        self.metrics
            .iter()
            .map(|m| match m {
                TaskMetric::Accuracy => metrics::accuracy(predictions, golds),
                TaskMetric::MacroF1 => metrics::macro_f1(predictions, golds),
                TaskMetric::Mcc => metrics::matthews(&is_positive(predictions), &is_positive(golds)),
                TaskMetric::F1 => metrics::binary_f1(&is_positive(predictions), &is_positive(golds)),
            })
            .collect()
    }
}

/// A multiple-choice task: one of the nine Russian SuperGLUE tasks, or one defined in a task file.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalTask {
    Rsg(RsgTask),
    File(Arc<TaskFile>),
}

impl From<RsgTask> for EvalTask {
    fn from(task: RsgTask) -> Self {
        Self::Rsg(task)
    }
}

impl EvalTask {
    pub fn name(&self) -> &str {
        match self {
            Self::Rsg(t) => t.name(),
            Self::File(f) => &f.name,
        }
    }

    /// The task's items in `records`; `verbalizers` (label → text) apply to the built-in label tasks.
    pub fn items(&self, records: &[Record], verbalizers: &BTreeMap<String, String>) -> Result<Vec<TaskItem>> {
        match self {
            Self::Rsg(t) => t.items(records, verbalizers),
            Self::File(f) => f.items(records),
        }
    }

    /// The file of split `name` (`train`, `val`) when a task file names it; the nine tasks name none.
    pub fn split(&self, name: &str) -> Option<PathBuf> {
        match self {
            Self::Rsg(_) => None,
            Self::File(f) => f.split(name).map(Path::to_path_buf),
        }
    }

    /// The names of the task's metrics, the main one first.
    pub fn metric_names(&self) -> Vec<&'static str> {
        match self {
            Self::Rsg(t) => t.metric_names().to_vec(),
            Self::File(f) => f.metrics.iter().map(|m| m.name()).collect(),
        }
    }

    /// The task's metrics for `predictions` (candidate index per item); an error when an item has no gold.
    pub fn metrics(&self, items: &[TaskItem], predictions: &[usize]) -> Result<Vec<Metric>> {
        ensure!(items.len() == predictions.len(), "{} items but {} predictions", items.len(), predictions.len());
        self.metrics_on(items, predictions, &(0..items.len()).collect::<Vec<_>>())
    }

    /// [`Self::metrics`] of the items at `subset` (indices may repeat: a bootstrap resample).
    pub fn metrics_on(&self, items: &[TaskItem], predictions: &[usize], subset: &[usize]) -> Result<Vec<Metric>> {
        let f = match self {
            Self::Rsg(t) => return t.metrics_on(items, predictions, subset),
            Self::File(f) => f,
        };
        let golds = subset.iter().map(|&i| gold(&items[i])).collect::<Result<Vec<usize>>>()?;
        let chosen: Vec<usize> = subset.iter().map(|&i| predictions[i]).collect();
        Ok(self
            .metric_names()
            .into_iter()
            .zip(f.metrics(&chosen, &golds))
            .map(|(name, value)| Metric { name: name.into(), value, stderr: None })
            .collect())
    }

    /// Each item's contribution to each metric when every metric is a mean over items (see
    /// [`RsgTask::per_item`]); `None` otherwise.
    pub fn per_item(&self, items: &[TaskItem], predictions: &[usize]) -> Result<Option<Vec<Vec<f64>>>> {
        match self {
            Self::Rsg(t) => t.per_item(items, predictions),
            Self::File(f) if f.metrics.iter().all(|m| *m == TaskMetric::Accuracy) => {
                Ok(Some(vec![right(items, predictions)?; f.metrics.len()]))
            }
            Self::File(_) => Ok(None),
        }
    }

    /// The submission file's name: `<Task>.jsonl`.
    pub fn submission_file(&self) -> String {
        format!("{}.jsonl", self.name())
    }

    /// The submission lines for `predictions`: the nine tasks' official layout; `{"idx", "label"}` sorted by idx
    /// for a task file (the label as the verbalizers name it, or the candidate index).
    pub fn submission(&self, items: &[TaskItem], predictions: &[usize]) -> Result<Vec<Value>> {
        match self {
            Self::Rsg(t) => t.submission(items, predictions),
            Self::File(_) => flat_submission(items, predictions),
        }
    }
}
