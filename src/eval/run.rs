//! The evaluation loop that classification scores and generated predictions share: per-item results cached on
//! disk under a fingerprint of what produced them, computed in length-sorted batches, with progress; and the
//! split of an evaluation into shards (`--shard i/n`, or MPI's ranks) whose results `--merge` puts together; the
//! opening checks and the one-task report both kinds of evaluation start and end with.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, ensure, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::dist::Ranks;
use crate::format::Row;
use crate::fs::{read_json_lines, DirLock, JsonLines};
use crate::model::Backbone;
use crate::progress::Progress;
use crate::prompt::Prompt;
use crate::report::{Report, TaskResult};
use crate::task::{Classifier, Item, ItemScores, TaskItem};

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

/// Which of an evaluation's items this process computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shard {
    /// Every item, and the report (a plain run).
    #[default]
    All,
    /// Items `index`, `index + count`, `index + 2·count`, … into `<out>/shards/<index>-of-<count>/`; no report.
    Part { index: usize, count: usize },
    /// Every item from the shards' results in `<out>/shards/` (nothing is computed), and the report.
    Merge,
}

/// Where the shards' folders are, under an evaluation's output folder.
const SHARDS_DIR: &str = "shards";

impl Shard {
    /// The folder this process writes into: `out`, or a part's own folder under it (so shards running at once
    /// never share a file).
    pub fn folder(&self, out: &Path) -> PathBuf {
        match self {
            Self::Part { index, count } => out.join(SHARDS_DIR).join(format!("{index}-of-{count}")),
            Self::All | Self::Merge => out.to_path_buf(),
        }
    }

    /// Makes this process's folder under `out` and holds its lock for the run. Called once the request has proved
    /// it can be evaluated, so a refused request leaves no folder behind.
    pub fn hold(&self, out: &Path) -> Result<DirLock> {
        let folder = self.folder(out);
        std::fs::create_dir_all(&folder).with_context(|| format!("cannot create {}", folder.display()))?;
        DirLock::acquire(&folder, "the evaluation folder")
    }

    /// Whether `index` is this shard's item.
    fn takes(&self, index: usize) -> bool {
        match self {
            Self::Part { index: part, count } => index % count == *part,
            Self::All | Self::Merge => true,
        }
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `i/n`: part `i` (from 0) of `n`.
    fn from_str(text: &str) -> Result<Self, String> {
        let parsed = text.split_once('/').and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((index, count)) if index < count => Ok(Self::Part { index, count }),
            Some((index, count)) => Err(format!(
                "shard {index} of {count} does not exist: shards run from 0 to {}",
                count.saturating_sub(1)
            )),
            None => Err(format!("`{text}` is not a shard: write i/n, e.g. 0/4 for the first of 4")),
        }
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::Part { index, count } => write!(f, "{index}/{count}"),
            Self::All => f.write_str("all items"),
            Self::Merge => f.write_str("merged shards"),
        }
    }
}

/// Refuses sizes that leave nothing to do, before anything is read.
pub fn check_sizes(limit: Option<usize>, batch_size: usize) -> Result<()> {
    ensure!(limit != Some(0), "--limit 0 leaves nothing to evaluate: give at least 1");
    ensure!(batch_size >= 1, "--batch-size must be at least 1");
    Ok(())
}

/// The report of one task evaluated on `backbone` (`mode`: how it was scored or decoded), written into `out`.
pub fn write_report(backbone: &Backbone, mode: String, task: TaskResult, out: &Path) -> Result<Report> {
    let report = Report { model: backbone.name(), mode, tasks: vec![task] };
    report.write(out)?;
    Ok(report)
}

/// Runs an evaluation as `shard` says; under `mpirun` (more than one rank, no `--shard`) every rank computes its
/// part, and once all are done rank 0 merges them and returns the report (the other ranks return `None`). The
/// shards meet in the output folder, so ranks on several machines need it on a shared file system.
pub fn across_ranks<R>(shard: Shard, mut evaluate: impl FnMut(Shard) -> Result<Option<R>>) -> Result<Option<R>> {
    let ranks = Ranks::world();
    if ranks.size == 1 {
        return evaluate(shard);
    }
    ensure!(shard == Shard::All, "--shard and --merge are for runs without mpirun: under mpirun each rank is a shard");
    evaluate(Shard::Part { index: ranks.rank, count: ranks.size })?;
    ranks.barrier();
    if ranks.is_root() {
        evaluate(Shard::Merge)
    } else {
        Ok(None)
    }
}

/// The one evaluation loop that scoring and generation share: results of `lengths.len()` items, those stored in
/// the cache `out/cache` (a file name relative to the evaluation's folder) under `fingerprint` reused, the rest
/// computed `batch` items at a time in order of length (similar lengths pad least), stored as they come, with
/// progress reported as `what`. A shard computes its own items into its own folder.
pub struct CachedRun<'a> {
    pub out: &'a Path,
    pub cache: &'a str,
    pub shard: Shard,
    pub fingerprint: &'a str,
    pub batch: usize,
    pub progress: &'a dyn Progress,
    pub what: &'a str,
}

impl CachedRun<'_> {
    /// `lengths[i]` orders the work; a stored result that fails `valid(i, result)` is computed again; `compute`
    /// returns the results of a chunk of item indices, in its order. Every item's result, in order; `None` for a
    /// part, whose results stay in its folder for the merge.
    pub fn run<T: Serialize + DeserializeOwned>(
        &self,
        lengths: &[usize],
        valid: impl Fn(usize, &T) -> bool,
        mut compute: impl FnMut(&[usize]) -> Result<Vec<T>>,
    ) -> Result<Option<Vec<T>>> {
        let n = lengths.len();
        let (cache, mut stored) = ItemCache::open(&self.shard.folder(self.out).join(self.cache), self.fingerprint, n)?;
        if self.shard == Shard::Merge {
            self.gather_parts(&cache, &mut stored)?;
        }
        let mut known: Vec<Option<T>> = stored
            .into_iter()
            .enumerate()
            .map(|(i, v)| v.and_then(|v| serde_json::from_value(v).ok()).filter(|r| valid(i, r)))
            .collect();
        let mut todo: Vec<usize> = (0..n).filter(|&i| known[i].is_none() && self.shard.takes(i)).collect();
        if self.shard == Shard::Merge && !todo.is_empty() {
            bail!(
                "--merge: {} of {n} items of {} have no result in {} (a shard has not finished, or ran with other \
                 settings): run the missing shards with the same command and --shard i/n first",
                todo.len(),
                self.what,
                self.out.join(SHARDS_DIR).display()
            );
        }
        todo.sort_by_key(|&i| lengths[i]);
        let mine = (0..n).filter(|&i| self.shard.takes(i)).count();
        self.progress.start(self.what, mine as u64, (mine - todo.len()) as u64);
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
        if let Shard::Part { .. } = self.shard {
            return Ok(None);
        }
        Ok(Some(known.into_iter().map(|r| r.expect("every item computed")).collect()))
    }

    /// Fills `stored` with the results of every part under `<out>/shards/` made under this fingerprint, and
    /// copies them into the merged cache (so a later run finds them there).
    fn gather_parts(&self, cache: &ItemCache, stored: &mut [Option<Value>]) -> Result<()> {
        let dir = self.out.join(SHARDS_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("--merge: {} holds no shards: run each with --shard i/n first", dir.display())
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
        };
        let mut parts: Vec<PathBuf> = entries.map(|e| Ok(e?.path().join(self.cache))).collect::<Result<_>>()?;
        parts.sort();
        for part in parts.iter().filter(|p| p.is_file()) {
            for (_, record) in read_json_lines(part)? {
                let Some(item) = record["item"].as_u64().map(|i| i as usize) else { continue };
                let fresh = stored.get(item).is_some_and(Option::is_none);
                if fresh && record["fingerprint"] == self.fingerprint {
                    cache.store(item, record["result"].clone())?;
                    stored[item] = Some(record["result"].clone());
                }
            }
        }
        Ok(())
    }
}

/// Every candidate's log-prob sums (whole text and content-free too, so every scoring mode derives from them) for
/// every item, computed with `classifier` through `run`, in item order.
pub fn scores_cached(
    classifier: &Classifier,
    items: &[TaskItem],
    content_free: &Row,
    run: &CachedRun,
) -> Result<Option<Vec<ItemScores>>> {
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
