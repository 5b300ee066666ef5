//! Batched decoding: rows of different lengths are left-padded into one batch, the first forward reads them
//! (with prompt embeddings injected), then one forward per new token feeds only that token through the KV cache.
//! Position ids come from the attention mask, so a row decodes the same whatever else is in its batch.

use anyhow::{ensure, Result};
use tch::{Kind, Tensor};

use super::logits::next_tokens;
use super::GenerationConfig;
use crate::model::{pad, Gpt2, Input, Side};
use crate::prompt::{inject, Injection};

/// What one output sequence got: the new token ids (ending with eos when it stopped there) and the raw logit of
/// each chosen token.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub new_ids: Vec<i64>,
    pub scores: Vec<f32>,
}

/// Continues every row of `inputs` (token ids, prompt tokens included where the format puts them), with the
/// prompts of `injections` written into their tokens' positions; the prompt embeddings inside `injections` are
/// computed once by the caller. Returns `num_return_sequences` outputs per input, in input order.
pub fn generate(
    model: &Gpt2,
    inputs: &[Vec<i64>],
    injections: &[Injection],
    config: &GenerationConfig,
) -> Result<Vec<Vec<Generated>>> {
    ensure!(!inputs.is_empty(), "nothing to generate from: no inputs");
    ensure!(inputs.iter().all(|r| !r.is_empty()), "an input is empty: generation needs at least one token");
    config.validate()?;
    match config.seed {
        Some(seed) => crate::rng::seeded(seed, || decode(model, inputs, injections, config)),
        None if config.do_sample => crate::rng::unseeded(|| decode(model, inputs, injections, config)),
        None => decode(model, inputs, injections, config),
    }
}

/// [`generate`]'s loop over new tokens, on checked arguments.
fn decode(
    model: &Gpt2,
    inputs: &[Vec<i64>],
    injections: &[Injection],
    config: &GenerationConfig,
) -> Result<Vec<Vec<Generated>>> {
    let _guard = tch::no_grad_guard();
    let device = model.device();
    let vocab = model.config().vocab_size;
    let n = config.num_return_sequences;
    let rows: Vec<&Vec<i64>> = inputs.iter().flat_map(|r| std::iter::repeat_n(r, n)).collect();
    let slices: Vec<&[i64]> = rows.iter().map(|r| r.as_slice()).collect();
    let (ids, mask) = pad(&slices, 0, Side::Left);
    let (mut ids, mut mask) = (ids.to_device(device), mask.to_device(device));
    // Real in-vocabulary tokens of each row, for the repetition penalty (padding and prompt tokens excluded).
    let mut seen: Vec<Vec<i64>> =
        rows.iter().map(|r| r.iter().copied().filter(|&t| (0..vocab).contains(&t)).collect()).collect();
    let mut cache = config.use_cache.then(|| model.new_cache());
    let mut out: Vec<Generated> = vec![Generated { new_ids: Vec::new(), scores: Vec::new() }; rows.len()];
    let mut finished = vec![false; rows.len()];
    let mut embeds = inject(model, &ids, injections)?;
    for _ in 0..config.max_new_tokens {
        let last = embeds.size()[1] - 1;
        let hidden = model.forward_from(Input::Embeds(&embeds), Some(&mask), cache.as_mut(), last)?;
        let logits = model.lm_logits(&hidden.select(1, 0));
        let next = next_tokens(&logits, &seen, config)?;
        let chosen = logits.gather(1, &next.unsqueeze(1), false).squeeze_dim(1).to_kind(Kind::Float);
        let (next_ids, chosen) = (Vec::<i64>::try_from(&next)?, Vec::<f32>::try_from(&chosen)?);
        for (r, (&token, &score)) in next_ids.iter().zip(&chosen).enumerate() {
            if finished[r] {
                continue;
            }
            out[r].new_ids.push(token);
            out[r].scores.push(score);
            seen[r].push(token);
            finished[r] = Some(token) == config.eos_token_id;
        }
        if finished.iter().all(|&f| f) {
            break;
        }
        let next = next.unsqueeze(1);
        mask = Tensor::cat(&[&mask, &mask.ones_like().narrow(1, 0, 1)], 1);
        embeds = match cache {
            Some(_) => model.embed(&next)?,
            None => {
                ids = Tensor::cat(&[&ids, &next], 1);
                inject(model, &ids, injections)?
            }
        };
    }
    let mut grouped = Vec::with_capacity(inputs.len());
    let mut it = out.into_iter();
    for _ in inputs {
        grouped.push(it.by_ref().take(n).collect());
    }
    Ok(grouped)
}
