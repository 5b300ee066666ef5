//! Greedy decoding with or without the KV cache: the reference decoder that parity tests and the demo use.

use anyhow::{ensure, Result};
use tch::Tensor;

use crate::model::{Gpt2, Input};

/// Tokens chosen by a greedy run, with the logit each had when chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct Greedy {
    pub new_ids: Vec<i64>,
    pub chosen_logits: Vec<f32>,
}

/// Appends up to `max_new_tokens` argmax tokens to `prompt`, stopping after `eos` if given. With `use_cache`
/// each step feeds only the new token; without it each step re-reads the whole sequence.
pub fn greedy(
    model: &Gpt2,
    prompt: &[i64],
    max_new_tokens: usize,
    eos: Option<i64>,
    use_cache: bool,
) -> Result<Greedy> {
    ensure!(!prompt.is_empty(), "greedy decoding needs at least one prompt token");
    let _guard = tch::no_grad_guard();
    let mut cache = use_cache.then(|| model.new_cache());
    let mut sequence = prompt.to_vec();
    let mut out = Greedy { new_ids: Vec::new(), chosen_logits: Vec::new() };
    for _ in 0..max_new_tokens {
        let feed = match &cache {
            Some(c) if !c.is_empty() => &sequence[sequence.len() - 1..],
            _ => &sequence[..],
        };
        let ids = Tensor::from_slice(feed).unsqueeze(0).to_device(model.device());
        let hidden = model.forward(Input::Ids(&ids), None, cache.as_mut())?;
        let logits = model.lm_logits(&hidden.select(1, -1).squeeze_dim(0));
        let next = logits.argmax(0, false).int64_value(&[]);
        out.chosen_logits.push(logits.double_value(&[next]) as f32);
        out.new_ids.push(next);
        sequence.push(next);
        if Some(next) == eos {
            break;
        }
    }
    Ok(out)
}
