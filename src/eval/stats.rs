//! How far a score can be trusted: bootstrap standard errors (lm-evaluation-harness' method: resample the items
//! with replacement, recompute the metric, take the spread), a paired interval for the difference of two settings
//! scored on the same items, and the majority-class and chance baselines of the evaluated split.

use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{RsgTask, TaskItem};

/// Resamples drawn for standard errors and intervals (lm-eval's default `bootstrap_iters`).
pub const BOOTSTRAP_ITERS: usize = 1000;
/// Seed of every resampling and of the chance baseline: the same report on every run.
pub const SEED: u64 = 1234;
/// Random predictions the chance baseline averages over.
const CHANCE_DRAWS: usize = 100;

/// `iters` resamples of `n` item indices, drawn with replacement from a seeded generator.
pub fn resamples(n: usize, iters: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..iters).map(|_| (0..n).map(|_| rng.random_range(0..n)).collect()).collect()
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

/// Spread of each of a task's metrics for one setting, and of the difference to another setting scored on the
/// same items.
#[derive(Debug, Clone, PartialEq)]
pub struct Spread {
    /// Bootstrap standard error per metric.
    pub stderr: Vec<f64>,
    /// Per metric, the 95% interval of (this − other) over the same resamples; empty without another setting.
    pub difference: Vec<(f64, f64)>,
}

/// Bootstrap standard errors of `task`'s metrics for `predictions`, and with `other` (another setting's
/// predictions on the same items) the paired 95% interval of the difference `predictions − other`.
pub fn spread(task: RsgTask, items: &[TaskItem], predictions: &[usize], other: Option<&[usize]>) -> Result<Spread> {
    let draws = resamples(items.len(), BOOTSTRAP_ITERS, SEED);
    let n_metrics = task.metric_names().len();
    let (mut values, mut differences) = (vec![Vec::new(); n_metrics], vec![Vec::new(); n_metrics]);
    for subset in &draws {
        let mine = task.metrics_on(items, predictions, subset)?;
        let theirs = other.map(|o| task.metrics_on(items, o, subset)).transpose()?;
        for (m, metric) in mine.iter().enumerate() {
            values[m].push(metric.value);
            if let Some(theirs) = &theirs {
                differences[m].push(metric.value - theirs[m].value);
            }
        }
    }
    Ok(Spread {
        stderr: values.iter().map(|v| sample_stddev(v)).collect(),
        difference: if other.is_some() { differences.iter().map(|d| interval95(d)).collect() } else { vec![] },
    })
}

/// The metrics of always answering with the most frequent gold candidate position (the majority class of a
/// label task), and the mean metrics of uniformly random answers (over a fixed number of seeded draws).
pub fn baselines(task: RsgTask, items: &[TaskItem]) -> Result<(Vec<f64>, Vec<f64>)> {
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
        let a = resamples(50, 20, 7);
        assert_eq!(a, resamples(50, 20, 7));
        assert_ne!(a, resamples(50, 20, 8));
        assert!(a.iter().all(|s| s.len() == 50 && s.iter().all(|&i| i < 50)));
        // With replacement: some resample repeats an index.
        assert!(a.iter().any(|s| {
            let mut sorted = s.clone();
            sorted.sort();
            sorted.windows(2).any(|w| w[0] == w[1])
        }));
    }
}
