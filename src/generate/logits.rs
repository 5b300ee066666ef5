//! Choosing the next token from logits: repetition penalty, then (when sampling) temperature, top-k and top-p,
//! in transformers' order and with its formulas.

use tch::{Kind, Tensor};

use super::GenerationConfig;

/// Divides positive and multiplies negative logits of tokens in `seen` by `penalty` (transformers'
/// `RepetitionPenaltyLogitsProcessor`). `seen` holds each row's real tokens inside the vocabulary.
fn penalise(logits: &Tensor, seen: &[Vec<i64>], penalty: f64) -> Tensor {
    let rows: Vec<Tensor> = seen
        .iter()
        .enumerate()
        .map(|(r, ids)| {
            let row = logits.get(r as i64);
            if ids.is_empty() {
                return row;
            }
            let idx = Tensor::from_slice(ids).to_device(logits.device());
            let picked = row.index_select(0, &idx);
            let changed = (&picked * penalty).where_self(&picked.lt(0.0), &(&picked / penalty));
            row.index_copy(0, &idx, &changed)
        })
        .collect();
    Tensor::stack(&rows, 0)
}

/// Keeps the `k` largest logits of each row; the rest become −∞.
fn top_k(logits: &Tensor, k: usize) -> Tensor {
    let k = (k as i64).min(logits.size()[1]).max(1);
    let (values, _) = logits.topk(k, -1, true, true);
    let threshold = values.narrow(1, k - 1, 1);
    logits.masked_fill(&logits.lt_tensor(&threshold), f64::NEG_INFINITY)
}

/// Keeps the smallest set of most likely tokens whose probability reaches `p` (at least one).
fn top_p(logits: &Tensor, p: f64) -> Tensor {
    let (sorted, indices) = logits.sort(-1, false);
    let cumulative = sorted.softmax(-1, Kind::Float).cumsum(-1, Kind::Float);
    let remove = cumulative.le(1.0 - p);
    let last = remove.size()[1] - 1;
    let _ = remove.narrow(1, last, 1).fill_(0);
    let remove = remove.scatter(1, &indices, &remove);
    logits.masked_fill(&remove, f64::NEG_INFINITY)
}

/// Next token of every row of `logits: [B, V]` (f32); `seen` feeds the repetition penalty.
pub fn next_tokens(logits: &Tensor, seen: &[Vec<i64>], config: &GenerationConfig) -> Tensor {
    let mut scores = logits.shallow_clone();
    if config.repetition_penalty != 1.0 {
        scores = penalise(&scores, seen, config.repetition_penalty);
    }
    if !config.do_sample {
        return scores.argmax(-1, false);
    }
    if config.temperature != 1.0 {
        scores /= config.temperature;
    }
    if let Some(k) = config.top_k.filter(|&k| k > 0) {
        scores = top_k(&scores, k);
    }
    if let Some(p) = config.top_p.filter(|&p| p < 1.0) {
        scores = top_p(&scores, p);
    }
    scores.softmax(-1, Kind::Float).multinomial(1, false).squeeze_dim(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_follow_transformers() {
        let logits = Tensor::from_slice(&[1.0f32, 3.0, 2.0, -1.0]).unsqueeze(0);
        let kept = |t: Tensor| {
            Vec::<f32>::try_from(t.squeeze_dim(0)).unwrap().iter().map(|v| v.is_finite()).collect::<Vec<_>>()
        };
        assert_eq!(kept(top_k(&logits, 2)), [false, true, true, false]);
        // softmax ≈ [0.087, 0.644, 0.237, 0.032]: p=0.7 needs the two most likely, p=0.5 only the first.
        assert_eq!(kept(top_p(&logits, 0.7)), [false, true, true, false]);
        assert_eq!(kept(top_p(&logits, 0.5)), [false, true, false, false]);
        let penalised = penalise(&logits, &[vec![1, 3]], 2.0);
        assert_eq!(Vec::<f32>::try_from(penalised.squeeze_dim(0)).unwrap(), [1.0, 1.5, 2.0, -2.0]);
    }
}
