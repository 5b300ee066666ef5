//! How far a score can be trusted: bootstrap standard errors (lm-evaluation-harness' method: resample the items
//! with replacement, recompute the metric, take the spread), a paired interval for the difference of two settings
//! scored on the same items, and the majority-class and chance baselines of the evaluated split.

use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::task::{EvalTask, TaskItem};

/// Resamples drawn for standard errors and intervals (lm-eval's default `bootstrap_iters`).
pub const BOOTSTRAP_ITERS: usize = 1000;
/// Seed of every resampling and of the chance baseline: the same report on every run.
pub const SEED: u64 = 1234;
/// Random predictions the chance baseline averages over.
const CHANCE_DRAWS: usize = 100;

/// `iters` resamples of `n` item indices, drawn with replacement from a seeded generator, one at a time.
pub fn resamples(n: usize, iters: usize, seed: u64) -> impl Iterator<Item = Vec<usize>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..iters).map(move |_| (0..n).map(|_| rng.random_range(0..n)).collect())
}

/// Sample standard deviation (n − 1 in the denominator), as lm-eval's `sample_stddev`.
pub fn sample_stddev(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len() - 1) as f64).sqrt()
}

/// The 2.5th and 97.5th percentiles of `values` (linear interpolation between order statistics).
pub fn interval95(values: &[f64]) -> (f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if sorted.is_empty() {
            return f64::NAN;
        }
        let pos = q * (sorted.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
    };
    (at(0.025), at(0.975))
}

/// `task`'s metrics for `predictions` on each seeded resample of the items: `values[m][r]` is metric `m` on resample
/// `r`. The resamples depend only on the number of items, so two settings' values line up resample by resample:
/// their differences are a paired bootstrap.
pub fn bootstrap(task: &EvalTask, items: &[TaskItem], predictions: &[usize]) -> Result<Vec<Vec<f64>>> {
    let mut values = vec![Vec::with_capacity(BOOTSTRAP_ITERS); task.metric_names().len()];
    // Metrics that are means over items: each resample averages the items' values, computed once (RuCoS' token
    // F1 would otherwise be recomputed for every item of every resample).
    if let Some(per_item) = task.per_item(items, predictions)? {
        for subset in resamples(items.len(), BOOTSTRAP_ITERS, SEED) {
            for (m, item_values) in per_item.iter().enumerate() {
                values[m].push(subset.iter().map(|&i| item_values[i]).sum::<f64>() / subset.len().max(1) as f64);
            }
        }
        return Ok(values);
    }
    for subset in resamples(items.len(), BOOTSTRAP_ITERS, SEED) {
        for (m, metric) in task.metrics_on(items, predictions, &subset)?.into_iter().enumerate() {
            values[m].push(metric.value);
        }
    }
    Ok(values)
}

/// Per metric, the bootstrap standard error: the spread of its resampled values.
pub fn stderr(values: &[Vec<f64>]) -> Vec<f64> {
    values.iter().map(|v| sample_stddev(v)).collect()
}

/// Per metric, the paired 95% interval of `a − b` (two settings' [`bootstrap`] values on the same items).
pub fn difference_interval(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<(f64, f64)> {
    a.iter().zip(b).map(|(a, b)| interval95(&a.iter().zip(b).map(|(x, y)| x - y).collect::<Vec<_>>())).collect()
}

/// The metrics of always answering with the most frequent gold candidate position (the majority class of a
/// label task), and the mean metrics of uniformly random answers (over a fixed number of seeded draws).
pub fn baselines(task: &EvalTask, items: &[TaskItem]) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut counts = std::collections::BTreeMap::<usize, usize>::new();
    for t in items {
        *counts.entry(t.item.gold.unwrap_or(0)).or_default() += 1;
    }
    // The most frequent position; the lowest on ties.
    let top = counts.iter().max_by_key(|(g, c)| (**c, std::cmp::Reverse(**g))).map_or(0, |(g, _)| *g);
    let majority: Vec<usize> = items.iter().map(|t| top.min(t.item.candidates.len().saturating_sub(1))).collect();
    let majority = task.metrics(items, &majority)?.into_iter().map(|m| m.value).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut chance = vec![0.0; task.metric_names().len()];
    for _ in 0..CHANCE_DRAWS {
        let random: Vec<usize> = items.iter().map(|t| rng.random_range(0..t.item.candidates.len().max(1))).collect();
        for (sum, m) in chance.iter_mut().zip(task.metrics(items, &random)?) {
            *sum += m.value / CHANCE_DRAWS as f64;
        }
    }
    Ok((majority, chance))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stddev_and_percentiles_by_hand() {
        // Mean 2.5, squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, over n − 1 = 3.
        assert!((sample_stddev(&[1.0, 2.0, 3.0, 4.0]) - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(sample_stddev(&[7.0]), 0.0);
        // 0..=100: the 2.5th percentile sits at position 2.5 → 2.5, the 97.5th at 97.5.
        let values: Vec<f64> = (0..=100).map(f64::from).collect();
        assert_eq!(interval95(&values), (2.5, 97.5));
    }

    #[test]
    fn resamples_are_seeded_and_drawn_with_replacement() {
        let draw = |seed| resamples(50, 20, seed).collect::<Vec<_>>();
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
        assert!(a.iter().all(|s| s.len() == 50 && s.iter().all(|&i| i < 50)));
        // With replacement: some resample repeats an index.
        assert!(a.iter().any(|s| {
            let mut sorted = s.clone();
            sorted.sort();
            sorted.windows(2).any(|w| w[0] == w[1])
        }));
    }
}
