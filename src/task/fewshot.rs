//! Few-shot demonstrations (in-context learning, the baseline prompt tuning is compared against): which solved
//! items of a split are shown before each evaluated item. Seeded per record, so an item's demonstrations do not
//! depend on which other items are evaluated (MuSeRC's answer options of one question share theirs); never from
//! the item's own record.

use std::path::PathBuf;

use anyhow::{ensure, Result};
use rand::seq::{index, SliceRandom};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Shot, TaskItem};

/// How demonstrations are drawn from the few-shot split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "cli", value(rename_all = "snake_case"))]
pub enum Sampler {
    /// k items at random.
    #[default]
    Random,
    /// k items spread evenly over the gold answers (labels), in random order.
    Balanced,
    /// The first k items of the split, in order (lm-evaluation-harness' `first_n`).
    FirstN,
}

/// The `fewshot:` config section (and `eval`'s few-shot flags).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FewShotConfig {
    /// Demonstrations per item; 0 is zero-shot.
    pub k: usize,
    /// The split they are drawn from: a split's name in the data's folder (`train`, `val`) or a file.
    pub split: String,
    pub seed: u64,
    /// What separates demonstrations from each other and from the item.
    pub delimiter: String,
    pub sampler: Sampler,
}

impl Default for FewShotConfig {
    fn default() -> Self {
        Self { k: 0, split: "train".into(), seed: 1234, delimiter: "\n\n".into(), sampler: Sampler::Random }
    }
}

impl FewShotConfig {
    /// The few-shot split's file: `split` as a path when it names a file, else the split of that name in `dir`.
    pub fn file(&self, dir: &std::path::Path) -> PathBuf {
        let path = PathBuf::from(&self.split);
        if path.is_file() {
            path
        } else {
            crate::data::split_file(dir, &self.split)
        }
    }
}

/// The `k` demonstrations of each of `items`, drawn from the labelled items of `pool` by `sampler` with a
/// generator seeded by `seed` and the item's record (its line); an item from the same record (file and line) as
/// the item it precedes is never drawn.
pub fn choose(items: &[TaskItem], pool: &[TaskItem], k: usize, sampler: Sampler, seed: u64) -> Result<Vec<Vec<Shot>>> {
    let labelled: Vec<(&TaskItem, Shot)> = pool
        .iter()
        .filter_map(|t| {
            let answer = t.item.candidates.get(t.item.gold?)?.clone();
            Some((t, Shot { row: t.item.row.clone(), answer }))
        })
        .collect();
    items
        .iter()
        .map(|target| {
            let eligible: Vec<&Shot> =
                labelled.iter().filter(|(t, _)| t.item.origin != target.item.origin).map(|(_, s)| s).collect();
            ensure!(
                eligible.len() >= k,
                "{}: {k} demonstrations asked for, but the few-shot split has only {} labelled items to draw from",
                target.item.origin,
                eligible.len()
            );
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(target.item.origin.line as u64);
            let picked: Vec<&Shot> = match sampler {
                Sampler::FirstN => eligible[..k].to_vec(),
                Sampler::Random => {
                    index::sample(&mut rng, eligible.len(), k).into_iter().map(|j| eligible[j]).collect()
                }
                Sampler::Balanced => balanced(&eligible, k, &mut rng),
            };
            Ok(picked.into_iter().cloned().collect())
        })
        .collect()
}

/// `k` of `shots` taken in turn from each gold answer's group (groups in random order, each shuffled), so the
/// answers differ in count by at most one while every group lasts; the result is shuffled.
fn balanced<'a>(shots: &[&'a Shot], k: usize, rng: &mut ChaCha8Rng) -> Vec<&'a Shot> {
    let mut answers: Vec<&str> = shots.iter().map(|s| s.answer.as_str()).collect();
    answers.sort_unstable();
    answers.dedup();
    answers.shuffle(rng);
    let mut groups: Vec<Vec<&Shot>> = answers
        .iter()
        .map(|a| {
            let mut g: Vec<&Shot> = shots.iter().copied().filter(|s| s.answer == *a).collect();
            g.shuffle(rng);
            g
        })
        .collect();
    let mut picked = Vec::with_capacity(k);
    while picked.len() < k {
        for g in groups.iter_mut() {
            if picked.len() < k {
                picked.extend(g.pop());
            }
        }
    }
    picked.shuffle(rng);
    picked
}
