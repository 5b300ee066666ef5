//! Choosing the next token from logits: repetition penalty, then (when sampling) temperature, top-k and top-p,
//! in transformers' order and with its formulas.

use anyhow::{anyhow, Result};
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

/// Next token of every row of `logits: [B, V]` (f32); `seen` feeds the repetition penalty. `config` has been
/// validated ([`GenerationConfig::validate`]).
pub fn next_tokens(logits: &Tensor, seen: &[Vec<i64>], config: &GenerationConfig) -> Result<Tensor> {
    // A NaN logit (an overflowing half-precision model) is never chosen.
    let mut scores = logits.nan_to_num(f64::NEG_INFINITY, None, None);
    if config.repetition_penalty != 1.0 {
        scores = penalise(&scores, seen, config.repetition_penalty);
    }
    let greedy = scores.argmax(-1, false);
    if !config.do_sample {
        return Ok(greedy);
    }
    if config.temperature != 1.0 {
        // Each row's largest score moved to 0 first: a tiny temperature then sends the others to −∞ (greedy in
        // the limit) instead of overflowing to +∞ and a NaN softmax.
        scores = (&scores - scores.amax([-1], true)) / config.temperature;
    }
    if let Some(k) = config.top_k.filter(|&k| k > 0) {
        scores = top_k(&scores, k);
    }
    if let Some(p) = config.top_p.filter(|&p| p < 1.0) {
        scores = top_p(&scores, p);
    }
    let probs = scores.softmax(-1, Kind::Float).nan_to_num(0.0, Some(0.0), Some(0.0));
    // A row with no finite probability left (every logit −∞ or +∞) takes its most likely token.
    let empty = probs.sum_dim_intlist(-1, false, Kind::Float).le(0.0);
    let probs =
        probs.where_self(&empty.logical_not().unsqueeze(-1), &greedy.one_hot(probs.size()[1]).to_kind(Kind::Float));
    let drawn = probs.f_multinomial(1, false).map_err(|e| anyhow!("sampling failed: {e}"))?.squeeze_dim(1);
    Ok(drawn)
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

    #[test]
    fn sampling_never_hands_non_finite_probabilities_to_the_sampler() {
        let sample = |values: &[f32], temperature: f64| {
            let config = GenerationConfig { do_sample: true, temperature, ..Default::default() };
            let logits = Tensor::from_slice(values).unsqueeze(0);
            Vec::<i64>::try_from(next_tokens(&logits, &[vec![]], &config).unwrap()).unwrap()[0]
        };
        // A denormal temperature is greedy in the limit (it overflowed to a NaN softmax and panicked before).
        assert_eq!(sample(&[1.0, 3.0, 2.0, -1.0], 1e-45), 1);
        // NaN logits are never drawn; +∞ leaves no finite probability, so the row is decoded greedily.
        assert_eq!(sample(&[f32::NAN, 3.0, f32::INFINITY, -1.0], 0.5), 2);
        assert!((0..4).contains(&sample(&[f32::NEG_INFINITY; 4], 1.0)));
        assert_eq!(sample(&[f32::NAN, f32::NAN, 5.0, f32::NAN], 1.0), 2);
    }
}
