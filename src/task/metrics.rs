//! The official metrics of Russian SuperGLUE: accuracy, macro-F1 (RCB), Matthews correlation (LiDiRus), F1a and
//! exact match over question groups (MuSeRC), token F1 and exact match against the best gold answer (RuCoS).

use std::collections::{BTreeSet, HashMap};

use ndarray::Array2;

/// Share of `pred` equal to `gold` (0 for no examples).
pub fn accuracy<T: PartialEq>(pred: &[T], gold: &[T]) -> f64 {
    assert_eq!(pred.len(), gold.len(), "predictions and golds differ in number");
    if gold.is_empty() {
        return 0.0;
    }
    pred.iter().zip(gold).filter(|(p, g)| p == g).count() as f64 / gold.len() as f64
}

/// `confusion[[gold, pred]]` counts over classes `0..n`.
fn confusion(pred: &[usize], gold: &[usize], n: usize) -> Array2<f64> {
    let mut m = Array2::<f64>::zeros((n, n));
    for (&p, &g) in pred.iter().zip(gold) {
        m[[g, p]] += 1.0;
    }
    m
}

/// Macro-averaged F1 over the classes that occur in `gold` or `pred`, as scikit-learn's
/// `f1_score(average="macro")` (a class with no true positives scores 0).
pub fn macro_f1(pred: &[usize], gold: &[usize]) -> f64 {
    assert_eq!(pred.len(), gold.len(), "predictions and golds differ in number");
    let classes: BTreeSet<usize> = pred.iter().chain(gold).copied().collect();
    let Some(&max) = classes.last() else { return 0.0 };
    let m = confusion(pred, gold, max + 1);
    let f1 = |c: usize| {
        let tp = m[[c, c]];
        let (predicted, actual) = (m.column(c).sum(), m.row(c).sum());
        if tp == 0.0 {
            0.0
        } else {
            2.0 * tp / (predicted + actual)
        }
    };
    classes.iter().map(|&c| f1(c)).sum::<f64>() / classes.len() as f64
}

/// F1 of the positive class of binary predictions (0 without true positives, as scikit-learn's `f1_score`).
pub fn binary_f1(pred: &[bool], gold: &[bool]) -> f64 {
    assert_eq!(pred.len(), gold.len(), "predictions and golds differ in number");
    let tp = pred.iter().zip(gold).filter(|(p, g)| **p && **g).count() as f64;
    let (predicted, actual) = (pred.iter().filter(|p| **p).count() as f64, gold.iter().filter(|g| **g).count() as f64);
    if tp == 0.0 {
        0.0
    } else {
        2.0 * tp / (predicted + actual)
    }
}

/// Matthews correlation coefficient of binary predictions (0 when undefined, as scikit-learn).
pub fn matthews(pred: &[bool], gold: &[bool]) -> f64 {
    let m = confusion(
        &pred.iter().map(|&b| usize::from(b)).collect::<Vec<_>>(),
        &gold.iter().map(|&b| usize::from(b)).collect::<Vec<_>>(),
        2,
    );
    let (tn, fp, fn_, tp) = (m[[0, 0]], m[[0, 1]], m[[1, 0]], m[[1, 1]]);
    let denominator = ((tp + fp) * (tp + fn_) * (tn + fp) * (tn + fn_)).sqrt();
    if denominator == 0.0 {
        0.0
    } else {
        (tp * tn - fp * fn_) / denominator
    }
}

/// MuSeRC: `(question id, predicted, gold)` for every answer option. F1a is the binary F1 of the positive class
/// over all options; EM is the share of questions whose options are all predicted right.
pub fn muserc(options: &[(u64, bool, bool)]) -> (f64, f64) {
    let tp = options.iter().filter(|(_, p, g)| *p && *g).count() as f64;
    let predicted = options.iter().filter(|(_, p, _)| *p).count() as f64;
    let actual = options.iter().filter(|(_, _, g)| *g).count() as f64;
    let f1a = if tp == 0.0 { 0.0 } else { 2.0 * tp / (predicted + actual) };
    let mut questions: HashMap<u64, bool> = HashMap::new();
    for (q, p, g) in options {
        *questions.entry(*q).or_insert(true) &= p == g;
    }
    let em = if questions.is_empty() {
        0.0
    } else {
        questions.values().filter(|&&ok| ok).count() as f64 / questions.len() as f64
    };
    (f1a, em)
}

/// SQuAD-style answer normalisation, as the RuCoS scorer does: lower case, no punctuation, no English articles,
/// single spaces.
pub fn normalize_answer(text: &str) -> String {
    let lower = text.to_lowercase();
    let no_punct: String =
        lower.chars().filter(|c| !c.is_ascii_punctuation() && !matches!(c, '«' | '»' | '—' | '–' | '…')).collect();
    no_punct.split_whitespace().filter(|w| !matches!(*w, "a" | "an" | "the")).collect::<Vec<_>>().join(" ")
}

/// Token-overlap F1 of two answers after normalisation.
fn token_f1(pred: &str, gold: &str) -> f64 {
    let (p, g) = (normalize_answer(pred), normalize_answer(gold));
    let (p, g): (Vec<&str>, Vec<&str>) =
        (p.split(' ').filter(|s| !s.is_empty()).collect(), g.split(' ').filter(|s| !s.is_empty()).collect());
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for t in &g {
        *counts.entry(t).or_default() += 1;
    }
    let common = p
        .iter()
        .filter(|t| {
            counts.get_mut(*t).is_some_and(|c| {
                *c -= 1;
                *c >= 0
            })
        })
        .count() as f64;
    if common == 0.0 {
        return 0.0;
    }
    let (precision, recall) = (common / p.len() as f64, common / g.len() as f64);
    2.0 * precision * recall / (precision + recall)
}

/// RuCoS: mean over queries of the best token F1 and the best exact match against any gold answer.
pub fn rucos(queries: &[(String, Vec<String>)]) -> (f64, f64) {
    if queries.is_empty() {
        return (0.0, 0.0);
    }
    let (f1, em) =
        queries.iter().map(|(pred, golds)| rucos_query(pred, golds)).fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    (f1 / queries.len() as f64, em / queries.len() as f64)
}

/// One RuCoS query's token F1 and exact match against its best gold answer: [`rucos`] averages them.
pub fn rucos_query(pred: &str, golds: &[String]) -> (f64, f64) {
    let f1 = golds.iter().map(|g| token_f1(pred, g)).fold(0.0, f64::max);
    let em = if golds.iter().any(|g| normalize_answer(pred) == normalize_answer(g)) { 1.0 } else { 0.0 };
    (f1, em)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn accuracy_and_macro_f1_by_hand() {
        // gold 0 0 1 1 2 2, pred 0 1 1 1 2 0: accuracy 4/6.
        let (gold, pred) = ([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]);
        close(accuracy(&pred, &gold), 4.0 / 6.0);
        // class 0: tp 1, predicted 2, actual 2 → F1 1/2; class 1: tp 2, predicted 3, actual 2 → 4/5;
        // class 2: tp 1, predicted 1, actual 2 → 2/3. Macro = (0.5 + 0.8 + 2/3) / 3.
        close(macro_f1(&pred, &gold), (0.5 + 0.8 + 2.0 / 3.0) / 3.0);
        // A class only predicted (never gold) counts with F1 0, as in scikit-learn.
        close(macro_f1(&[0, 2], &[0, 0]), (2.0 / 3.0 + 0.0) / 2.0);
    }

    #[test]
    fn binary_f1_by_hand() {
        // tp 2, fp 1, fn 1: 2·2 / (3 + 3) = 2/3; no true positive scores 0.
        let (t, f) = (true, false);
        close(binary_f1(&[t, t, t, f, f], &[t, t, f, t, f]), 2.0 / 3.0);
        close(binary_f1(&[f, f], &[t, f]), 0.0);
    }

    #[test]
    fn matthews_by_hand() {
        // tp 2, tn 1, fp 1, fn 1: (2·1 − 1·1) / sqrt(3·3·2·2) = 1/6.
        let gold = [true, true, true, false, false];
        let pred = [true, true, false, true, false];
        close(matthews(&pred, &gold), 1.0 / 6.0);
        close(matthews(&gold, &gold), 1.0);
        close(matthews(&[true, true], &[true, false]), 0.0);
    }

    #[test]
    fn muserc_by_hand() {
        // Question 1 all right; question 2 one option wrong. tp 2, predicted 3, actual 3 → F1a 2/3; EM 1/2.
        let options = [(1, true, true), (1, false, false), (2, true, true), (2, true, false), (2, false, true)];
        let (f1a, em) = muserc(&options);
        close(f1a, 2.0 / 3.0);
        close(em, 0.5);
    }

    #[test]
    fn rucos_by_hand() {
        assert_eq!(normalize_answer("  «Москва», the City!"), "москва city");
        // "Владимир Путин" vs gold "Путин": common 1, precision 1/2, recall 1 → F1 2/3; EM 0.
        // "Россия." vs golds ["РФ", "россия"]: F1 1, EM 1.
        let queries = vec![
            ("Владимир Путин".to_string(), vec!["Путин".to_string()]),
            ("Россия.".to_string(), vec!["РФ".to_string(), "россия".to_string()]),
        ];
        let (f1, em) = rucos(&queries);
        close(f1, (2.0 / 3.0 + 1.0) / 2.0);
        close(em, 0.5);
    }
}
