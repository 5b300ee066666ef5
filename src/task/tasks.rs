//! The nine Russian SuperGLUE tasks ([`RsgTask`]: names, labels, quirks of the distributed files), read from their
//! official jsonl layout: each record becomes one or more
//! multiple-choice [`Item`]s (MuSeRC: one per answer option), and predictions become the official metrics and the
//! submission layout (`<Task>.jsonl` with `idx` and `label`).

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::{json, Value};

use serde::{Deserialize, Serialize};

use super::metrics;
use super::Item;
use crate::data::{Origin, Record};
use crate::format::Row;

/// The Russian SuperGLUE tasks. Training reads the flat ones (`dataset.task`); evaluation reads all nine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum RsgTask {
    Danetqa,
    Terra,
    Rcb,
    Parus,
    Muserc,
    Rucos,
    Russe,
    Rwsd,
    Lidirus,
}

impl RsgTask {
    /// Keys some upstream rows spell differently: (found, meant). RCB's train split has two rows with
    /// `no_negation` where every other row has `negation`.
    pub fn renamed_keys(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Rcb => &[("no_negation", "negation")],
            _ => &[],
        }
    }
}

/// One item of a task with what scoring and submission need besides it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskItem {
    pub item: Item,
    /// Official ids: `[idx]`, or `[passage idx, question idx, answer idx]` for MuSeRC.
    pub ids: Vec<u64>,
    /// The label value of each candidate as the submission writes it (`true`, `"entailment"`, `1`, an entity).
    pub labels: Vec<Value>,
    /// RuCoS: every gold answer text (token F1 and EM take the best); empty for the other tasks.
    pub gold_texts: Vec<String>,
}

/// One metric's name and value.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    /// Its bootstrap standard error, where one was computed (the benchmark table shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<f64>,
}

/// The text a label is known by in verbalizer maps: strings as they are, `true`/`false`, numbers in decimal (as
/// training's classification preprocessing reads labels).
pub fn label_key(label: &Value) -> Option<String> {
    match label {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn field<'a>(row: &'a Row, name: &str, origin: &Origin) -> Result<&'a Value> {
    row.get(name).ok_or_else(|| anyhow!("{origin}: the row has no field '{name}'"))
}

fn text(row: &Row, name: &str, origin: &Origin) -> Result<String> {
    match field(row, name, origin)? {
        Value::String(s) => Ok(s.clone()),
        other => bail!("{origin}: field '{name}' should be text, found {other}"),
    }
}

fn id(row: &Row, origin: &Origin) -> Result<u64> {
    field(row, "idx", origin)?.as_u64().ok_or_else(|| anyhow!("{origin}: field 'idx' is not a non-negative integer"))
}

fn array<'a>(row: &'a Row, name: &str, origin: &Origin) -> Result<&'a Vec<Value>> {
    field(row, name, origin)?.as_array().ok_or_else(|| anyhow!("{origin}: field '{name}' is not a list"))
}

fn object<'a>(value: &'a Value, what: &str, origin: &Origin) -> Result<&'a Row> {
    value.as_object().ok_or_else(|| anyhow!("{origin}: {what} is not an object"))
}

/// Copies the scalar (text, number, bool) top-level fields of `row`: what a format can use.
fn scalars(row: &Row) -> Row {
    row.iter().filter(|(_, v)| !v.is_object() && !v.is_array()).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// `s` with its first letter in lower case (PARus' choices continue the premise's sentence).
fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map_or_else(String::new, |c| c.to_lowercase().chain(chars).collect())
}

impl RsgTask {
    /// Every task, in the order of the Russian SuperGLUE leaderboard.
    pub const ALL: [RsgTask; 9] = [
        Self::Lidirus,
        Self::Rcb,
        Self::Parus,
        Self::Muserc,
        Self::Terra,
        Self::Russe,
        Self::Rwsd,
        Self::Danetqa,
        Self::Rucos,
    ];

    /// The official name, as submission files and the leaderboard spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Danetqa => "DaNetQA",
            Self::Terra => "TERRa",
            Self::Rcb => "RCB",
            Self::Parus => "PARus",
            Self::Muserc => "MuSeRC",
            Self::Rucos => "RuCoS",
            Self::Russe => "RUSSE",
            Self::Rwsd => "RWSD",
            Self::Lidirus => "LiDiRus",
        }
    }

    /// The label values of a label task, in candidate order; `None` for PARus and RuCoS, whose candidates come
    /// from each record.
    pub fn labels(self) -> Option<Vec<Value>> {
        Some(match self {
            Self::Danetqa | Self::Russe | Self::Rwsd => vec![json!(true), json!(false)],
            Self::Muserc => vec![json!(1), json!(0)],
            Self::Terra | Self::Lidirus => vec![json!("entailment"), json!("not_entailment")],
            Self::Rcb => vec![json!("entailment"), json!("contradiction"), json!("neutral")],
            Self::Parus | Self::Rucos => return None,
        })
    }

    /// The items of `records` (one task's split in the official layout). Label tasks take their candidate texts
    /// from `verbalizers` (label key → text, e.g. `true: " да"`). Rows without `label` (test splits) get no gold.
    pub fn items(self, records: &[Record], verbalizers: &BTreeMap<String, String>) -> Result<Vec<TaskItem>> {
        let labelled = |row, label, ids, origin: &Origin| self.labelled(row, label, ids, origin, verbalizers);
        let mut items = Vec::new();
        for Record { row, origin } in records {
            let origin = origin.clone();
            match self {
                Self::Danetqa | Self::Terra | Self::Rcb | Self::Russe => {
                    items.push(labelled(scalars(row), row.get("label"), vec![id(row, &origin)?], &origin)?)
                }
                Self::Lidirus => {
                    // LiDiRus is scored with a TERRa prompt on the leaderboard: its sentences also go by TERRa's names.
                    let mut fields = scalars(row);
                    fields.insert("premise".into(), Value::String(text(row, "sentence1", &origin)?));
                    fields.insert("hypothesis".into(), Value::String(text(row, "sentence2", &origin)?));
                    items.push(labelled(fields, row.get("label"), vec![id(row, &origin)?], &origin)?)
                }
                Self::Rwsd => {
                    let mut fields = scalars(row);
                    let target = object(field(row, "target", &origin)?, "field 'target'", &origin)?;
                    for name in ["span1_text", "span2_text"] {
                        fields.insert(name.into(), Value::String(text(target, name, &origin)?));
                    }
                    items.push(labelled(fields, row.get("label"), vec![id(row, &origin)?], &origin)?)
                }
                Self::Parus => {
                    let mut fields = scalars(row);
                    let premise = text(row, "premise", &origin)?;
                    let connective = match text(row, "question", &origin)?.as_str() {
                        "cause" => "потому что",
                        "effect" => "поэтому",
                        other => bail!("{origin}: PARus question should be 'cause' or 'effect', found {other:?}"),
                    };
                    fields.insert("premise_clause".into(), premise.trim_end_matches(['.', '!', '?']).into());
                    fields.insert("connective".into(), connective.into());
                    let choices = [text(row, "choice1", &origin)?, text(row, "choice2", &origin)?];
                    let gold = match row.get("label") {
                        None => None,
                        Some(l) => Some(
                            l.as_u64()
                                .filter(|&l| l < 2)
                                .ok_or_else(|| anyhow!("{origin}: PARus label should be 0 or 1, found {l}"))?
                                as usize,
                        ),
                    };
                    let ids = vec![id(row, &origin)?];
                    items.push(TaskItem {
                        item: Item {
                            row: fields,
                            candidates: choices.iter().map(|c| format!(" {}", lowercase_first(c))).collect(),
                            gold,
                            origin,
                            shots: vec![],
                        },
                        ids,
                        labels: vec![json!(0), json!(1)],
                        gold_texts: vec![],
                    });
                }
                Self::Muserc => items.extend(self.muserc_items(row, &origin, verbalizers)?),
                Self::Rucos => items.extend(rucos_items(row, &origin)?),
            }
        }
        Ok(items)
    }

    /// A label task's item: the verbalizers in label order as candidates, the row's label as gold.
    fn labelled(
        self,
        row: Row,
        label: Option<&Value>,
        ids: Vec<u64>,
        origin: &Origin,
        verbalizers: &BTreeMap<String, String>,
    ) -> Result<TaskItem> {
        let labels = self.labels().expect("a label task");
        let candidates = labels
            .iter()
            .map(|l| {
                let key = label_key(l).expect("labels are scalars");
                verbalizers
                    .get(&key)
                    .cloned()
                    .ok_or_else(|| anyhow!("{}: no verbalizer for label {key:?}", self.name()))
            })
            .collect::<Result<Vec<_>>>()?;
        let gold = match label {
            None => None,
            Some(l) => Some(labels.iter().position(|x| label_key(x) == label_key(l)).ok_or_else(|| {
                anyhow!("{origin}: label {l} is not one of {}'s labels ({})", self.name(), Value::from(labels.clone()))
            })?),
        };
        Ok(TaskItem {
            item: Item { row, candidates, gold, origin: origin.clone(), shots: vec![] },
            ids,
            labels,
            gold_texts: vec![],
        })
    }

    fn muserc_items(self, row: &Row, origin: &Origin, verbalizers: &BTreeMap<String, String>) -> Result<Vec<TaskItem>> {
        let passage = object(field(row, "passage", origin)?, "field 'passage'", origin)?;
        let text_ = text(passage, "text", origin)?;
        let mut items = Vec::new();
        for q in array(passage, "questions", origin)? {
            let q = object(q, "a question", origin)?;
            let question = text(q, "question", origin)?;
            for a in array(q, "answers", origin)? {
                let a = object(a, "an answer", origin)?;
                let fields: Row = [
                    ("passage".to_string(), Value::String(text_.clone())),
                    ("question".to_string(), Value::String(question.clone())),
                    ("answer".to_string(), Value::String(text(a, "text", origin)?)),
                ]
                .into_iter()
                .collect();
                let ids = vec![id(row, origin)?, id(q, origin)?, id(a, origin)?];
                items.push(self.labelled(fields, a.get("label"), ids, origin, verbalizers)?);
            }
        }
        Ok(items)
    }

    /// The official metrics of this task for `predictions` (candidate index per item); an error when some item
    /// has no gold label (a test split).
    pub fn metrics(self, items: &[TaskItem], predictions: &[usize]) -> Result<Vec<Metric>> {
        ensure!(items.len() == predictions.len(), "{} items but {} predictions", items.len(), predictions.len());
        self.metrics_on(items, predictions, &(0..items.len()).collect::<Vec<_>>())
    }

    /// [`Self::metrics`] of the items at `subset` (indices may repeat: a bootstrap resample).
    pub fn metrics_on(self, items: &[TaskItem], predictions: &[usize], subset: &[usize]) -> Result<Vec<Metric>> {
        let golds = subset.iter().map(|&i| gold(&items[i])).collect::<Result<Vec<usize>>>()?;
        let chosen: Vec<usize> = subset.iter().map(|&i| predictions[i]).collect();
        let (predictions, items): (&[usize], Vec<&TaskItem>) = (&chosen, subset.iter().map(|&i| &items[i]).collect());
        let values = match self {
            Self::Danetqa | Self::Terra | Self::Parus | Self::Russe | Self::Rwsd => {
                vec![metrics::accuracy(predictions, &golds)]
            }
            Self::Rcb => vec![metrics::macro_f1(predictions, &golds), metrics::accuracy(predictions, &golds)],
            // Label 0 is "entailment": MCC takes it as the positive class.
            Self::Lidirus => {
                let positive = |v: &[usize]| v.iter().map(|&i| i == 0).collect::<Vec<_>>();
                vec![metrics::matthews(&positive(predictions), &positive(&golds))]
            }
            Self::Muserc => {
                // Candidate 0 is label 1 (the option is right). Questions are told apart by passage and question id.
                let options: Vec<(u64, bool, bool)> = items
                    .iter()
                    .zip(predictions.iter().zip(&golds))
                    .map(|(t, (&p, &g))| ((t.ids[0] << 32) | t.ids[1], p == 0, g == 0))
                    .collect();
                let (f1a, em) = metrics::muserc(&options);
                vec![f1a, em]
            }
            Self::Rucos => {
                let queries: Vec<(String, Vec<String>)> = items
                    .iter()
                    .zip(predictions)
                    .map(|(t, &p)| (t.item.candidates[p].clone(), t.gold_texts.clone()))
                    .collect();
                let (f1, em) = metrics::rucos(&queries);
                vec![f1, em]
            }
        };
        Ok(self
            .metric_names()
            .iter()
            .zip(values)
            .map(|(name, value)| Metric { name: name.to_string(), value, stderr: None })
            .collect())
    }

    /// When every metric of the task is a mean over items (accuracy; RuCoS' F1 and EM), each item's contribution
    /// to each metric (`values[m][i]`) under `predictions`: resampling then needs no recomputation. `None` for the
    /// metrics that are not (macro-F1, MCC, MuSeRC's).
    pub fn per_item(self, items: &[TaskItem], predictions: &[usize]) -> Result<Option<Vec<Vec<f64>>>> {
        Ok(match self {
            Self::Danetqa | Self::Terra | Self::Parus | Self::Russe | Self::Rwsd => {
                Some(vec![right(items, predictions)?])
            }
            Self::Rucos => {
                let (f1, em): (Vec<f64>, Vec<f64>) = items
                    .iter()
                    .zip(predictions)
                    .map(|(t, &p)| metrics::rucos_query(&t.item.candidates[p], &t.gold_texts))
                    .unzip();
                Some(vec![f1, em])
            }
            Self::Rcb | Self::Lidirus | Self::Muserc => None,
        })
    }

    /// The names of the task's official metrics, the leaderboard's main one first.
    pub fn metric_names(self) -> &'static [&'static str] {
        match self {
            Self::Danetqa | Self::Terra | Self::Parus | Self::Russe | Self::Rwsd => &["accuracy"],
            Self::Rcb => &["macro_f1", "accuracy"],
            Self::Lidirus => &["mcc"],
            Self::Muserc => &["f1a", "em"],
            Self::Rucos => &["f1", "em"],
        }
    }

    /// The submission file's name: `TERRa.jsonl`.
    pub fn submission_file(self) -> String {
        format!("{}.jsonl", self.name())
    }

    /// The submission lines for `predictions`: `{"idx", "label"}` per record, sorted by `idx` (the leaderboard asks
    /// for a sorted idx); MuSeRC nests answer labels under their passage and question, as its official layout does.
    pub fn submission(self, items: &[TaskItem], predictions: &[usize]) -> Result<Vec<Value>> {
        if self != Self::Muserc {
            return flat_submission(items, predictions);
        }
        ensure!(items.len() == predictions.len(), "{} items but {} predictions", items.len(), predictions.len());
        // passage → question → answers, in the order they were read.
        let mut passages: Vec<(u64, Questions)> = Vec::new();
        for (t, &p) in items.iter().zip(predictions) {
            let (passage, question, answer) = (t.ids[0], t.ids[1], t.ids[2]);
            if passages.last().is_none_or(|(id, _)| *id != passage) {
                passages.push((passage, Vec::new()));
            }
            let questions = &mut passages.last_mut().expect("pushed").1;
            if questions.last().is_none_or(|(id, _)| *id != question) {
                questions.push((question, Vec::new()));
            }
            questions.last_mut().expect("pushed").1.push(json!({"idx": answer, "label": t.labels[p]}));
        }
        passages.sort_by_key(|(idx, _)| *idx);
        Ok(passages
            .into_iter()
            .map(|(idx, questions)| {
                let questions: Vec<Value> =
                    questions.into_iter().map(|(idx, answers)| json!({"idx": idx, "answers": answers})).collect();
                json!({"idx": idx, "passage": {"questions": questions}})
            })
            .collect())
    }
}

/// MuSeRC's questions of one passage: (question idx, answer labels).
type Questions = Vec<(u64, Vec<Value>)>;

/// RuCoS: one item per query; the candidates are the passage's distinct entity texts, which fill the query's
/// `@placeholder` (fields `query_start` and `query_end` hold the text around it).
fn rucos_items(row: &Row, origin: &Origin) -> Result<Vec<TaskItem>> {
    let passage = object(field(row, "passage", origin)?, "field 'passage'", origin)?;
    let text_ = text(passage, "text", origin)?;
    let chars: Vec<char> = text_.chars().collect();
    let span = |v: &Value, what: &str| -> Result<String> {
        let o = object(v, what, origin)?;
        let at = |k: &str| {
            field(o, k, origin)?
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| anyhow!("{origin}: {what}: '{k}' is not an index"))
        };
        let (start, end) = (at("start")?, at("end")?);
        ensure!(start <= end && end <= chars.len(), "{origin}: {what} [{start}, {end}) is outside the passage");
        Ok(chars[start..end].iter().collect())
    };
    let mut entities: Vec<String> = Vec::new();
    for e in array(passage, "entities", origin)? {
        let e = span(e, "an entity")?;
        if !entities.contains(&e) {
            entities.push(e);
        }
    }
    ensure!(!entities.is_empty(), "{origin}: the passage has no entities");
    let passage_text = text_.replace("@highlight\n", "- ");
    let mut items = Vec::new();
    for q in array(row, "qas", origin)? {
        let q = object(q, "a query", origin)?;
        let query = text(q, "query", origin)?;
        let (start, end) =
            query.split_once("@placeholder").ok_or_else(|| anyhow!("{origin}: the query has no @placeholder"))?;
        let gold_texts = match q.get("answers") {
            None => vec![],
            Some(Value::Array(answers)) => {
                answers.iter().map(|a| text(object(a, "an answer", origin)?, "text", origin)).collect::<Result<_>>()?
            }
            Some(_) => bail!("{origin}: field 'answers' is not a list"),
        };
        let gold = match gold_texts.first() {
            None => None,
            Some(_) => Some(
                entities
                    .iter()
                    .position(|e| gold_texts.contains(e))
                    .with_context(|| format!("{origin}: no entity of the passage is a gold answer"))?,
            ),
        };
        let fields: Row =
            [("text", passage_text.clone()), ("query_start", start.to_string()), ("query_end", end.to_string())]
                .into_iter()
                .map(|(k, v)| (k.to_string(), Value::String(v)))
                .collect();
        items.push(TaskItem {
            item: Item { row: fields, candidates: entities.clone(), gold, origin: origin.clone(), shots: vec![] },
            ids: vec![id(row, origin)?],
            labels: entities.iter().map(|e| Value::String(e.clone())).collect(),
            gold_texts,
        });
    }
    Ok(items)
}

/// An item's gold candidate; an error naming the item where it has none (a test split has no metrics).
pub(super) fn gold(t: &TaskItem) -> Result<usize> {
    t.item.gold.ok_or_else(|| anyhow!("{}: no gold label, so no metrics", t.item.origin))
}

/// 1 where the prediction is the item's gold, 0 where not: each item's part of the accuracy.
pub(super) fn right(items: &[TaskItem], predictions: &[usize]) -> Result<Vec<f64>> {
    items.iter().zip(predictions).map(|(t, &p)| Ok(f64::from(u8::from(gold(t)? == p)))).collect()
}

/// `{"idx", "label"}` per item, sorted by `idx` (the leaderboard asks for a sorted idx): the submission layout of
/// every flat task.
pub(super) fn flat_submission(items: &[TaskItem], predictions: &[usize]) -> Result<Vec<Value>> {
    ensure!(items.len() == predictions.len(), "{} items but {} predictions", items.len(), predictions.len());
    let mut lines: Vec<(u64, Value)> = items
        .iter()
        .zip(predictions)
        .map(|(t, &p)| (t.ids[0], json!({"idx": t.ids[0], "label": t.labels[p]})))
        .collect();
    lines.sort_by_key(|(idx, _)| *idx);
    Ok(lines.into_iter().map(|(_, line)| line).collect())
}
