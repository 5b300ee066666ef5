//! Running a classifier over a task's items with a progress bar, keeping every item's candidate scores in an
//! on-disk cache: an interrupted evaluation resumes where it stopped, and a rerun of the same setting is free.

use std::path::Path;

use anyhow::Result;
use indicatif::ProgressBar;
use serde_json::{json, Value};

use super::{best, Classifier, Item, TaskItem};
use crate::format::Row;
use crate::fs::JsonLines;

/// A cheap stand-in for an item's token count: the chars of its fields and longest candidate.
fn length(t: &TaskItem) -> usize {
    let fields: usize = t.item.row.values().filter_map(Value::as_str).map(|s| s.chars().count()).sum();
    fields + t.item.candidates.iter().map(|c| c.chars().count()).max().unwrap_or(0)
}

/// Scores every item with `classifier`, `batch` items at a time in order of length (similar lengths pad least),
/// and returns the predicted candidate of each, in item order. With `cache`, results are appended there as they
/// come; records under another `fingerprint` (a different model, format, prompt, mode or data) are dropped,
/// those under this one are reused.
pub fn predict_cached(
    classifier: &Classifier,
    items: &[TaskItem],
    content_free: Option<&Row>,
    cache: Option<(&Path, &str)>,
    batch: usize,
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
    let mut todo: Vec<usize> = (0..items.len()).filter(|&i| known[i].is_none()).collect();
    todo.sort_by_key(|&i| length(&items[i]));
    progress.set_length(items.len() as u64);
    progress.set_position((items.len() - todo.len()) as u64);
    for chunk in todo.chunks(batch.max(1)) {
        let refs: Vec<&Item> = chunk.iter().map(|&i| &items[i].item).collect();
        for (&i, scores) in chunk.iter().zip(classifier.candidate_scores(&refs, content_free)?) {
            if let Some((log, fingerprint)) = &log {
                log.append(&json!({ "fingerprint": fingerprint, "item": i, "scores": scores }))?;
            }
            known[i] = Some(scores);
        }
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    Ok(known.iter().map(|s| best(s.as_ref().expect("every item scored")).expect("items have candidates")).collect())
}
