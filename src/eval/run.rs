//! Running a classifier over a task's items with a progress bar, keeping every item's candidate scores in an
//! on-disk cache: an interrupted evaluation resumes where it stopped, and a rerun of the same setting is free.

use std::path::Path;

use anyhow::Result;
use indicatif::ProgressBar;
use serde_json::{json, Value};

use super::{best, Classifier, TaskItem};
use crate::format::Row;
use crate::fs::JsonLines;

/// Scores every item with `classifier` and returns the predicted candidate of each. With `cache`, results are
/// appended there as they come; records under another `fingerprint` (a different model, format, prompt, mode or
/// data) are dropped, those under this one are reused.
pub fn predict_cached(
    classifier: &Classifier,
    items: &[TaskItem],
    content_free: Option<&Row>,
    cache: Option<(&Path, &str)>,
    progress: &ProgressBar,
) -> Result<Vec<usize>> {
    let mut known: Vec<Option<Vec<f64>>> = vec![None; items.len()];
    let log = match cache {
        None => None,
        Some((path, fingerprint)) => {
            let (log, kept) = JsonLines::open(path, |v| v["fingerprint"] == fingerprint)?;
            for record in kept {
                let Some(i) = record["item"].as_u64().map(|i| i as usize).filter(|&i| i < items.len()) else {
                    continue;
                };
                let scores: Option<Vec<f64>> =
                    record["scores"].as_array().and_then(|a| a.iter().map(Value::as_f64).collect());
                known[i] = scores.filter(|s| s.len() == items[i].item.candidates.len());
            }
            Some((log, fingerprint))
        }
    };
    progress.set_length(items.len() as u64);
    progress.set_position(known.iter().filter(|k| k.is_some()).count() as u64);
    let mut predictions = Vec::with_capacity(items.len());
    for (i, t) in items.iter().enumerate() {
        let scores = match known[i].take() {
            Some(scores) => scores,
            None => {
                let scores = classifier.candidate_scores(&t.item, content_free)?;
                if let Some((log, fingerprint)) = &log {
                    log.append(&json!({ "fingerprint": fingerprint, "item": i, "scores": scores }))?;
                }
                progress.inc(1);
                scores
            }
        };
        predictions.push(best(&scores).expect("items have candidates"));
    }
    progress.finish_and_clear();
    Ok(predictions)
}
