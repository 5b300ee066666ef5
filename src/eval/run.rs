//! Running a classifier over a task's items with a progress bar, and the on-disk per-item cache that classification
//! scores and generated predictions share.

use std::path::Path;

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use serde_json::{json, Value};

use super::{best, Classifier, Item, TaskItem};
use crate::format::Row;
use crate::fs::JsonLines;
use crate::prompt::Prompt;

/// A cheap stand-in for an item's token count: the chars of its fields and longest candidate.
fn length(t: &TaskItem) -> usize {
    let fields: usize = t.item.row.values().filter_map(Value::as_str).map(|s| s.chars().count()).sum();
    fields + t.item.candidates.iter().map(|c| c.chars().count()).max().unwrap_or(0)
}

/// A digest of what a cached result depends on: `parts` (model, format, mode, data, …) and the prompt's weights.
/// SHA-256 over length-prefixed parts and the weights' little-endian bits: the same on every toolchain and
/// machine, so a cache stays valid across Rust releases (the first 16 hex digits are kept).
pub fn fingerprint(parts: &[&str], prompt: Option<&Prompt>) -> Result<String> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    if let Some(p) = prompt {
        let weights = Vec::<f32>::try_from(p.embeddings().to_kind(tch::Kind::Float).flatten(0, -1))?;
        for x in weights {
            h.update(x.to_le_bytes());
        }
    }
    Ok(h.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect())
}

/// Per-item results on disk under a fingerprint of what produced them (model, format, prompt, mode, data):
/// opening drops records of another fingerprint and hands back the rest, so an interrupted evaluation resumes and
/// a rerun of the same setting is free.
pub struct ItemCache {
    log: JsonLines,
    fingerprint: String,
}

impl ItemCache {
    /// Opens `path` (creating its folder) and returns, for each of `n` items, its stored result if there is one.
    pub fn open(path: &Path, fingerprint: &str, n: usize) -> Result<(Self, Vec<Option<Value>>)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let (log, kept) = JsonLines::open(path, |v| v["fingerprint"] == fingerprint)?;
        let mut known = vec![None; n];
        for mut record in kept {
            if let Some(slot) = record["item"].as_u64().and_then(|i| known.get_mut(i as usize)) {
                *slot = Some(record["result"].take());
            }
        }
        Ok((Self { log, fingerprint: fingerprint.to_string() }, known))
    }

    pub fn store(&self, item: usize, result: Value) -> Result<()> {
        self.log.append(&json!({ "fingerprint": self.fingerprint, "item": item, "result": result }))
    }
}

/// Scores every item with `classifier`, `batch` items at a time in order of length (similar lengths pad least),
/// and returns the predicted candidate of each, in item order. Each item's scores go to the cache at `path` under
/// `fingerprint` as they come; those already there are reused.
pub fn predict_cached(
    classifier: &Classifier,
    items: &[TaskItem],
    content_free: Option<&Row>,
    (path, fingerprint): (&Path, &str),
    batch: usize,
    progress: &ProgressBar,
) -> Result<Vec<usize>> {
    let (cache, stored) = ItemCache::open(path, fingerprint, items.len())?;
    let mut known: Vec<Option<Vec<f64>>> = stored
        .into_iter()
        .zip(items)
        .map(|(v, t)| {
            let scores: Vec<f64> = v?.as_array()?.iter().map(Value::as_f64).collect::<Option<_>>()?;
            (scores.len() == t.item.candidates.len()).then_some(scores)
        })
        .collect();
    let mut todo: Vec<usize> = (0..items.len()).filter(|&i| known[i].is_none()).collect();
    todo.sort_by_key(|&i| length(&items[i]));
    progress.set_length(items.len() as u64);
    progress.set_position((items.len() - todo.len()) as u64);
    for chunk in todo.chunks(batch.max(1)) {
        let refs: Vec<&Item> = chunk.iter().map(|&i| &items[i].item).collect();
        for (&i, scores) in chunk.iter().zip(classifier.candidate_scores(&refs, content_free)?) {
            cache.store(i, json!(scores))?;
            known[i] = Some(scores);
        }
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    Ok(known.iter().map(|s| best(s.as_ref().expect("every item scored")).expect("items have candidates")).collect())
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    #[test]
    fn fingerprints_are_stable_digests_of_their_parts() {
        // SHA-256 of (len as u64 LE, bytes) per part, as Python's hashlib gives it: no toolchain or machine may
        // change it, or every cache would be rescored.
        assert_eq!(fingerprint(&["model", "format"], None).unwrap(), "298cc0d982a3c11b");
        assert_ne!(fingerprint(&["mo", "delformat"], None).unwrap(), fingerprint(&["model", "format"], None).unwrap());
    }
}
