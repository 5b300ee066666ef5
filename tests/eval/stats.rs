//! Error bars of the evaluation report (`eval::stats`): bootstrap standard errors against the binomial formula,
//! the paired interval of a difference on made-up predictions where tuned clearly wins and where it does not, and
//! the majority and chance baselines by hand.

use ruprompts::data::read_rows;
use ruprompts::eval::stats::{
    baselines, bootstrap, difference_interval, resamples, sample_stddev, stderr, BOOTSTRAP_ITERS, SEED,
};
use ruprompts::task::{RsgTask, TaskFormats, TaskItem};

/// `n` TERRa items, the first `entailed` of them labelled entailment (candidate 0).
fn items(n: usize, entailed: usize) -> Vec<TaskItem> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("terra.jsonl");
    let rows: String = (0..n)
        .map(|i| {
            let label = if i < entailed { "entailment" } else { "not_entailment" };
            format!("{{\"premise\": \"П {i}\", \"hypothesis\": \"Г {i}\", \"idx\": {i}, \"label\": \"{label}\"}}\n")
        })
        .collect();
    std::fs::write(&path, rows).unwrap();
    RsgTask::Terra.items(&read_rows(&path).unwrap(), &TaskFormats::bundled(RsgTask::Terra).verbalizers).unwrap()
}

/// Predictions right on the first `right` items of `items` and wrong on the rest.
fn right_on(items: &[TaskItem], right: usize) -> Vec<usize> {
    items
        .iter()
        .enumerate()
        .map(|(i, t)| if i < right { t.item.gold.unwrap() } else { 1 - t.item.gold.unwrap() })
        .collect()
}

#[test]
fn bootstrap_errors_and_paired_intervals() {
    let items = items(200, 120);
    // Accuracy 0.7 over 200 items: binomial stderr sqrt(0.7 · 0.3 / 200) = 0.0324; the bootstrap is within 10%.
    let draws = |right: usize| bootstrap(&RsgTask::Terra.into(), &items, &right_on(&items, right)).unwrap();
    let s = stderr(&draws(140));
    let binomial = (0.7f64 * 0.3 / 200.0).sqrt();
    assert!((s[0] - binomial).abs() < 0.1 * binomial, "{} vs {binomial}", s[0]);
    // Tuned right on 170, zero-shot on 100 (of the same first items): +0.35, an interval far from 0.
    let (lo, hi) = difference_interval(&draws(170), &draws(100))[0];
    assert!(lo > 0.25 && hi < 0.45 && lo < 0.35 && 0.35 < hi, "[{lo}, {hi}]");
    // One item apart (141 vs 140 right): the interval straddles 0.
    let close = difference_interval(&draws(141), &draws(140));
    let (lo, hi) = close[0];
    assert!(lo <= 0.0 && 0.0 < hi, "[{lo}, {hi}]");
    // Seeded: the same report twice.
    assert_eq!(close, difference_interval(&draws(141), &draws(140)));
}

#[test]
fn majority_and_chance_baselines_by_hand() {
    // 12 of 16 entailed: always "entailment" scores 0.75; random answers score 0.5 on average.
    let items = items(16, 12);
    let (majority, chance) = baselines(&RsgTask::Terra.into(), &items).unwrap();
    assert_eq!(majority, [0.75]);
    assert!((chance[0] - 0.5).abs() < 0.05, "{chance:?}");
    // RCB's two metrics: the majority class gets accuracy 0.75 and macro-F1 over the three classes (0.857 + 0 + 0)/3.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rcb.jsonl");
    let labels = ["entailment"; 12].iter().chain(&["contradiction"; 2]).chain(&["neutral"; 2]).copied();
    let rows: String = labels
        .enumerate()
        .map(|(i, l)| format!("{{\"premise\": \"П\", \"hypothesis\": \"Г\", \"idx\": {i}, \"label\": \"{l}\"}}\n"))
        .collect();
    std::fs::write(&path, rows).unwrap();
    let rcb = RsgTask::Rcb.items(&read_rows(&path).unwrap(), &TaskFormats::bundled(RsgTask::Rcb).verbalizers).unwrap();
    let (majority, _) = baselines(&RsgTask::Rcb.into(), &rcb).unwrap();
    let f1 = 2.0 * 0.75 / 1.75;
    assert!((majority[0] - f1 / 3.0).abs() < 1e-12 && majority[1] == 0.75, "{majority:?}");
}

#[test]
fn bootstrap_by_hand_on_a_tiny_table() {
    // Four items, right on items 0 and 2: each resample's accuracy is the share of drawn indices that are 0 or 2,
    // recomputed here from the same seeded resamples; the stderr is their sample standard deviation.
    let items = items(4, 2);
    let predictions =
        right_on(&items, 4).iter().enumerate().map(|(i, &p)| if i % 2 == 0 { p } else { 1 - p }).collect::<Vec<_>>();
    let by_hand: Vec<f64> = resamples(4, BOOTSTRAP_ITERS, SEED)
        .map(|draw| draw.iter().filter(|&&i| i % 2 == 0).count() as f64 / 4.0)
        .collect();
    let draws = bootstrap(&RsgTask::Terra.into(), &items, &predictions).unwrap();
    assert_eq!(draws, std::slice::from_ref(&by_hand));
    assert_eq!(stderr(&draws), [sample_stddev(&by_hand)]);
    // sqrt(p(1 − p)/n) = 0.25 for p = 1/2, n = 4: the bootstrap of 1000 draws lands near it.
    assert!((stderr(&draws)[0] - 0.25).abs() < 0.03, "{:?}", stderr(&draws));
}

#[test]
fn per_item_resampling_equals_recomputing_the_metrics() {
    // Tasks whose metrics are means over items resample the items' values; that must be what recomputing the
    // metrics on every resample gives (RuCoS: token F1 and EM against the best gold; accuracy tasks).
    for (task, file) in [(RsgTask::Rucos, "RuCoS/val.jsonl"), (RsgTask::Parus, "PARus/val.jsonl")] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rsg").join(file);
        let items = task.items(&read_rows(&path).unwrap(), &TaskFormats::bundled(task).verbalizers).unwrap();
        let predictions: Vec<usize> = items.iter().enumerate().map(|(i, t)| i % t.item.candidates.len()).collect();
        let fast = bootstrap(&task.into(), &items, &predictions).unwrap();
        let mut slow = vec![Vec::new(); fast.len()];
        for subset in resamples(items.len(), BOOTSTRAP_ITERS, SEED) {
            for (m, metric) in task.metrics_on(&items, &predictions, &subset).unwrap().into_iter().enumerate() {
                slow[m].push(metric.value);
            }
        }
        for (f, s) in fast.iter().zip(&slow) {
            assert!(f.iter().zip(s).all(|(a, b)| (a - b).abs() < 1e-12), "{task:?}");
        }
    }
}
