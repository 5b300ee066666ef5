//! The evaluation loop that classification scores and generated predictions share: per-item results cached on
//! disk under a fingerprint of what produced them, computed in length-sorted batches, with progress.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use super::{Classifier, Item, ItemScores, TaskItem};
use crate::format::Row;
use crate::fs::JsonLines;
use crate::progress::Progress;
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
struct ItemCache {
    log: JsonLines,
    fingerprint: String,
}

impl ItemCache {
    /// Opens `path` (creating its folder) and returns, for each of `n` items, its stored result if there is one.
    fn open(path: &Path, fingerprint: &str, n: usize) -> Result<(Self, Vec<Option<Value>>)> {
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

    fn store(&self, item: usize, result: Value) -> Result<()> {
        self.log.append(&json!({ "fingerprint": self.fingerprint, "item": item, "result": result }))
    }
}

/// The one evaluation loop that scoring and generation share: results of `lengths.len()` items, those stored in
/// the cache at `cache` under `fingerprint` reused, the rest computed `batch` items at a time in order of length
/// (similar lengths pad least), stored as they come, with progress reported as `what`.
pub struct CachedRun<'a> {
    pub cache: &'a Path,
    pub fingerprint: &'a str,
    pub batch: usize,
    pub progress: &'a dyn Progress,
    pub what: &'a str,
}

impl CachedRun<'_> {
    /// `lengths[i]` orders the work; a stored result that fails `valid(i, result)` is computed again; `compute`
    /// returns the results of a chunk of item indices, in its order.
    pub fn run<T: Serialize + DeserializeOwned>(
        &self,
        lengths: &[usize],
        valid: impl Fn(usize, &T) -> bool,
        mut compute: impl FnMut(&[usize]) -> Result<Vec<T>>,
    ) -> Result<Vec<T>> {
        let n = lengths.len();
        let (cache, stored) = ItemCache::open(self.cache, self.fingerprint, n)?;
        let mut known: Vec<Option<T>> = stored
            .into_iter()
            .enumerate()
            .map(|(i, v)| v.and_then(|v| serde_json::from_value(v).ok()).filter(|r| valid(i, r)))
            .collect();
        let mut todo: Vec<usize> = (0..n).filter(|&i| known[i].is_none()).collect();
        todo.sort_by_key(|&i| lengths[i]);
        self.progress.start(self.what, n as u64, (n - todo.len()) as u64);
        for chunk in todo.chunks(self.batch.max(1)) {
            let results = compute(chunk)?;
            ensure!(results.len() == chunk.len(), "{} results for {} items", results.len(), chunk.len());
            for (&i, result) in chunk.iter().zip(results) {
                cache.store(i, serde_json::to_value(&result)?)?;
                known[i] = Some(result);
            }
            self.progress.advance(chunk.len() as u64, "");
        }
        self.progress.finish();
        Ok(known.into_iter().map(|r| r.expect("every item computed")).collect())
    }
}

/// Every candidate's log-prob sums (whole text and content-free too, so every scoring mode derives from them) for
/// every item, computed with `classifier` through `run`, in item order.
pub fn scores_cached(
    classifier: &Classifier,
    items: &[TaskItem],
    content_free: &Row,
    run: &CachedRun,
) -> Result<Vec<ItemScores>> {
    let lengths: Vec<usize> = items.iter().map(length).collect();
    run.run(
        &lengths,
        |i, s: &ItemScores| {
            let n = items[i].item.candidates.len();
            s.candidates.len() == n && s.content_free.len() == n
        },
        |chunk| {
            let refs: Vec<&Item> = chunk.iter().map(|&i| &items[i].item).collect();
            classifier.scored(&refs, Some(content_free), true)
        },
    )
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
