//! Corpus chrF and BLEU for generated text against one reference each, computed as sacreBLEU 2.x does by default
//! (chrF: character 6-grams without whitespace, β = 2; BLEU: 13a tokenization, 4-grams, exponential smoothing),
//! so figures compare with published RUSSE detoxification results.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;

fn ngrams<T: std::hash::Hash + Eq + Clone>(items: &[T], n: usize) -> HashMap<&[T], usize> {
    let mut counts = HashMap::new();
    if items.len() >= n {
        for w in items.windows(n) {
            *counts.entry(w).or_insert(0) += 1;
        }
    }
    counts
}

/// Σ over n-grams of min(hypothesis count, reference count).
fn clipped_matches<T: std::hash::Hash + Eq + Clone>(
    hyp: &HashMap<&[T], usize>,
    reference: &HashMap<&[T], usize>,
) -> usize {
    hyp.iter().map(|(g, &c)| c.min(reference.get(g).copied().unwrap_or(0))).sum()
}

/// Corpus chrF (0–100) of `hypotheses` against `references`, pairwise.
pub fn chrf(hypotheses: &[String], references: &[String]) -> f64 {
    assert_eq!(hypotheses.len(), references.len(), "hypotheses and references differ in number");
    const ORDER: usize = 6;
    const BETA2: f64 = 4.0;
    // Per order: hypothesis n-grams, reference n-grams, matches; summed over the corpus.
    let mut stats = [[0usize; 3]; ORDER];
    for (h, r) in hypotheses.iter().zip(references) {
        let (h, r): (Vec<char>, Vec<char>) =
            (h.chars().filter(|c| !c.is_whitespace()).collect(), r.chars().filter(|c| !c.is_whitespace()).collect());
        for (n, s) in stats.iter_mut().enumerate() {
            let (hg, rg) = (ngrams(&h, n + 1), ngrams(&r, n + 1));
            s[0] += h.len().saturating_sub(n);
            s[1] += r.len().saturating_sub(n);
            s[2] += clipped_matches(&hg, &rg);
        }
    }
    let (mut precision, mut recall, mut orders) = (0.0, 0.0, 0);
    for [hyp, reference, matched] in stats {
        if hyp > 0 && reference > 0 {
            precision += matched as f64 / hyp as f64;
            recall += matched as f64 / reference as f64;
            orders += 1;
        }
    }
    if orders == 0 {
        return 0.0;
    }
    let (p, r) = (precision / orders as f64, recall / orders as f64);
    if p + r == 0.0 {
        return 0.0;
    }
    100.0 * (1.0 + BETA2) * p * r / (BETA2 * p + r)
}

/// sacreBLEU's `13a` tokenizer (mteval-v13a): punctuation split off, periods and commas too unless inside a
/// number.
pub fn tokenize_13a(text: &str) -> Vec<String> {
    static RULES: LazyLock<[(Regex, &str); 4]> = LazyLock::new(|| {
        [
            (Regex::new(r"([\{-~\[-` -&\(-\+:-@/])").expect("valid"), " $1 "),
            (Regex::new(r"([^0-9])([\.,])").expect("valid"), "$1 $2 "),
            (Regex::new(r"([\.,])([^0-9])").expect("valid"), " $1 $2"),
            (Regex::new(r"([0-9])(-)").expect("valid"), "$1 $2 "),
        ]
    });
    let mut line = text.replace("<skipped>", "").replace("-\n", "").replace('\n', " ");
    if line.contains('&') {
        line = line.replace("&quot;", "\"").replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">");
    }
    let mut line = format!(" {line} ");
    for (re, with) in RULES.iter() {
        line = re.replace_all(&line, *with).into_owned();
    }
    line.split_whitespace().map(str::to_string).collect()
}

/// Corpus BLEU (0–100) of `hypotheses` against `references`, pairwise.
pub fn bleu(hypotheses: &[String], references: &[String]) -> f64 {
    assert_eq!(hypotheses.len(), references.len(), "hypotheses and references differ in number");
    const ORDER: usize = 4;
    let (mut hyp_len, mut ref_len) = (0usize, 0usize);
    let (mut correct, mut total) = ([0usize; ORDER], [0usize; ORDER]);
    for (h, r) in hypotheses.iter().zip(references) {
        let (h, r) = (tokenize_13a(h), tokenize_13a(r));
        hyp_len += h.len();
        ref_len += r.len();
        for n in 0..ORDER {
            correct[n] += clipped_matches(&ngrams(&h, n + 1), &ngrams(&r, n + 1));
            total[n] += h.len().saturating_sub(n);
        }
    }
    if correct.iter().all(|&c| c == 0) {
        return 0.0;
    }
    let brevity = if hyp_len >= ref_len {
        1.0
    } else if hyp_len > 0 {
        (1.0 - ref_len as f64 / hyp_len as f64).exp()
    } else {
        0.0
    };
    let mut smooth = 1.0;
    let mut log_sum = 0.0;
    for n in 0..ORDER {
        if total[n] == 0 {
            return 0.0;
        }
        let precision = if correct[n] == 0 {
            smooth *= 2.0;
            100.0 / (smooth * total[n] as f64)
        } else {
            100.0 * correct[n] as f64 / total[n] as f64
        };
        log_sum += precision.ln();
    }
    brevity * (log_sum / ORDER as f64).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Expected values: sacrebleu 2.6.0, `corpus_chrf(hyps, [refs]).score` and `corpus_bleu(hyps, [refs]).score`.
    #[test]
    fn chrf_and_bleu_equal_sacrebleu() {
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        let hyps = strings(&["Кошка сидит на ковре.", "Привет, как дела?", "это тест"]);
        let refs = strings(&["Кошка сидела на ковре.", "Привет! Как у тебя дела?", "это тест"]);
        close(chrf(&hyps, &refs), 56.66116363428699);
        close(bleu(&hyps, &refs), 24.43582258648473);
        let hyps = strings(&["Кошка сидит на ковре.", "Привет, как дела?", "это тест", "Ну и глупый же ты..."]);
        let refs = strings(&["Кошка сидела на ковре.", "Привет! Как у тебя дела?", "это тест", "Ты не очень умён."]);
        close(chrf(&hyps, &refs), 44.069401669090276);
        close(bleu(&hyps, &refs), 15.51008098503499);
        close(bleu(&strings(&["a b c d e f"]), &strings(&["a b c d e g"])), 75.98356856515926);
        close(bleu(&strings(&["a b"]), &strings(&["a b c d e"])), 0.0);
        close(chrf(&strings(&["да"]), &strings(&["нет"])), 0.0);
    }

    #[test]
    fn tokenizer_13a_equals_sacrebleu() {
        assert_eq!(
            tokenize_13a("Привет, мир! Это (тест) 3.14 и 1,000-2 a.b \"q\" x-y.").join(" "),
            "Привет , мир ! Это ( тест ) 3.14 и 1,000 - 2 a . b \" q \" x-y ."
        );
        assert_eq!(tokenize_13a("Ну и дурак же ты...").join(" "), "Ну и дурак же ты . . .");
    }
}
