//! Log-probabilities of candidate continuations under the frozen LM, with or without a prompt: what
//! perplexity-based classification compares. Two ways, same numbers: [`score_naive`] runs context and candidate
//! together for every candidate (the reference); [`score_shared`] runs the context once into the KV cache and
//! all candidates from it in one batch, projecting to the vocabulary only where a token is scored.

use anyhow::{ensure, Result};
use tch::{Kind, Tensor};

use crate::data::{pad, Side};
use crate::model::{Gpt2, Input};
use crate::prompt::{inject, Injection};

/// A candidate continuation of a context: the answer that is scored, then the rest of the formatted text
/// (literal text and any prompt tokens after the answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub answer: Vec<i64>,
    pub suffix: Vec<i64>,
}

/// Log-probability sums of one candidate. Prompt tokens are never predicted, so they count in neither sum.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Scored {
    /// Σ log p(answer token | everything before it).
    pub answer_logprob: f64,
    pub answer_tokens: usize,
    /// Σ log p over every predicted token of the whole text (context, answer, suffix): the CPT paper's
    /// "perplexity of the resulting fragment" is `exp(-text_logprob / text_tokens)`.
    pub text_logprob: f64,
    pub text_tokens: usize,
}

/// Log-probabilities of `targets` given the hidden states `hidden: [N, d]` that predict them (one each);
/// targets outside the vocabulary (prompt tokens) get `None`.
fn target_logprobs(model: &Gpt2, hidden: &Tensor, targets: &[i64]) -> Result<Vec<Option<f64>>> {
    let vocab = model.config().vocab_size;
    let real: Vec<bool> = targets.iter().map(|t| (0..vocab).contains(t)).collect();
    let keep: Vec<i64> = (0..targets.len() as i64).filter(|&i| real[i as usize]).collect();
    if keep.is_empty() {
        return Ok(vec![None; targets.len()]);
    }
    let device = model.device();
    let rows = hidden.index_select(0, &Tensor::from_slice(&keep).to_device(device));
    let wanted: Vec<i64> = keep.iter().map(|&i| targets[i as usize]).collect();
    let logp = model.lm_logits(&rows).log_softmax(-1, Kind::Float);
    let picked = logp.gather(1, &Tensor::from_slice(&wanted).to_device(device).unsqueeze(1), false).squeeze_dim(1);
    let mut values = Vec::<f64>::try_from(picked.to_kind(Kind::Double))?.into_iter();
    Ok(real.iter().map(|&r| if r { values.next() } else { None }).collect())
}

/// Adds the log-probs of `tokens`, those in `answer` also to the answer sums.
fn accumulate(scored: &mut Scored, logprobs: &[Option<f64>], answer: std::ops::Range<usize>) {
    for (i, lp) in logprobs.iter().enumerate() {
        if let Some(lp) = lp {
            scored.text_logprob += lp;
            scored.text_tokens += 1;
            if answer.contains(&i) {
                scored.answer_logprob += lp;
                scored.answer_tokens += 1;
            }
        }
    }
}

/// The reference: one forward over context + answer + suffix per candidate. With `whole_text` false only the
/// answer is scored (`text_*` stay 0): the other positions are never projected to the vocabulary.
pub fn score_naive(
    model: &Gpt2,
    injections: &[Injection],
    context: &[i64],
    candidates: &[Candidate],
    whole_text: bool,
) -> Result<Vec<Scored>> {
    ensure!(!context.is_empty(), "scoring needs a non-empty context");
    let _guard = tch::no_grad_guard();
    candidates
        .iter()
        .map(|c| {
            let ids: Vec<i64> = [context, &c.answer, &c.suffix].concat();
            let input = Tensor::from_slice(&ids).unsqueeze(0).to_device(model.device());
            let hidden = model.forward(Input::Embeds(&inject(model, &input, injections)?), None, None)?.squeeze_dim(0);
            let t = ids.len() as i64;
            // Position p predicts token p + 1.
            let start = context.len() - 1;
            let mut scored = Scored::default();
            if whole_text {
                let logprobs = target_logprobs(model, &hidden.narrow(0, 0, t - 1), &ids[1..])?;
                accumulate(&mut scored, &logprobs, start..start + c.answer.len());
            } else {
                let n = c.answer.len();
                let logprobs = target_logprobs(model, &hidden.narrow(0, start as i64, n as i64), &c.answer)?;
                scored.answer_logprob = logprobs.iter().flatten().sum();
                scored.answer_tokens = logprobs.iter().flatten().count();
            }
            Ok(scored)
        })
        .collect()
}

/// The prompts' rows that a segment holds: the first `taken` rows went to what came before it.
fn slice_injections<'a>(injections: &[Injection<'a>], ids: &[i64], taken: &mut [i64]) -> Vec<Injection<'a>> {
    injections
        .iter()
        .zip(taken.iter_mut())
        .filter_map(|(inj, taken)| {
            let n = ids.iter().filter(|&&t| t == inj.token_id).count() as i64;
            let rows = inj.embeddings.narrow(0, *taken, n);
            *taken += n;
            (n > 0).then(|| Injection { name: inj.name, token_id: inj.token_id, embeddings: rows })
        })
        .collect()
}

/// The context once through the KV cache, then every candidate in one batch from it (no second forward at all
/// when every answer is one token and only answers are scored). Same numbers as [`score_naive`] up to float
/// rounding.
pub fn score_shared(
    model: &Gpt2,
    injections: &[Injection],
    context: &[i64],
    candidates: &[Candidate],
    whole_text: bool,
) -> Result<Vec<Scored>> {
    ensure!(!context.is_empty(), "scoring needs a non-empty context");
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let _guard = tch::no_grad_guard();
    let device = model.device();
    let mut taken = vec![0i64; injections.len()];
    let context_injections = slice_injections(injections, context, &mut taken);
    let input = Tensor::from_slice(context).unsqueeze(0).to_device(device);
    let mut cache = model.new_cache();
    let embeds = inject(model, &input, &context_injections)?;
    let hidden = model.forward(Input::Embeds(&embeds), None, Some(&mut cache))?.squeeze_dim(0);
    let c = context.len() as i64;
    let mut base = Scored::default();
    if whole_text {
        accumulate(&mut base, &target_logprobs(model, &hidden.narrow(0, 0, c - 1), &context[1..])?, 0..0);
    }
    let last = hidden.get(c - 1);

    // Candidates, right-padded into one batch that continues from the context's cache; only the tokens that are
    // scored are fed (an answer alone when the suffix is not scored and holds no prompt rows to place).
    let rows: Vec<Vec<i64>> = candidates
        .iter()
        .map(|cand| if whole_text { [&cand.answer[..], &cand.suffix].concat() } else { cand.answer.clone() })
        .collect();
    let width = rows.iter().map(Vec::len).max().unwrap_or(0) as i64;
    ensure!(width > 0, "every candidate is empty");
    let d = model.config().n_embd;
    // Token j of a candidate is predicted by the context's last state (j = 0) or by its own state j − 1: row 0
    // of `states` is the context's last state, then the batch's states row by row.
    let states = if width == 1 {
        last.unsqueeze(0)
    } else {
        let hidden = continue_batch(model, injections, &taken, &cache, &rows, c)?;
        Tensor::cat(&[last.unsqueeze(0), hidden.reshape([-1, d])], 0)
    };
    let mut picks = Vec::new();
    let mut targets = Vec::new();
    for (r, row) in rows.iter().enumerate() {
        for (j, &t) in row.iter().enumerate() {
            picks.push(if j == 0 { 0 } else { 1 + r as i64 * width + j as i64 - 1 });
            targets.push(t);
        }
    }
    let picked = states.index_select(0, &Tensor::from_slice(&picks).to_device(device));
    let logprobs = target_logprobs(model, &picked, &targets)?;
    let mut offset = 0;
    Ok(rows
        .iter()
        .zip(candidates)
        .map(|(row, cand)| {
            let mut scored = base;
            let logprobs = &logprobs[offset..offset + row.len()];
            if whole_text {
                accumulate(&mut scored, logprobs, 0..cand.answer.len());
            } else {
                scored.answer_logprob = logprobs.iter().flatten().sum();
                scored.answer_tokens = logprobs.iter().flatten().count();
            }
            offset += row.len();
            scored
        })
        .collect())
}

/// Hidden states `[k, width, d]` of the candidate `rows`, right-padded into one batch continuing from the
/// context's `cache` (`c` tokens, which used the first `taken` rows of each prompt).
fn continue_batch(
    model: &Gpt2,
    injections: &[Injection],
    taken: &[i64],
    cache: &crate::model::KvCache,
    rows: &[Vec<i64>],
    c: i64,
) -> Result<Tensor> {
    let device = model.device();
    let k = rows.len() as i64;
    let slices: Vec<&[i64]> = rows.iter().map(|r| r.as_slice()).collect();
    let (ids_t, row_mask) = pad(&slices, 0, Side::Right);
    let ids_t = ids_t.to_device(device);
    // The mask covers the cached context too: all real.
    let mask_t = Tensor::cat(&[Tensor::ones([k, c], (Kind::Int64, row_mask.device())), row_mask], 1).to_device(device);
    // Every candidate row holds the same prompt tokens after the answer (they come from the same format).
    let rest = slice_injections(injections, &rows[0], &mut taken.to_vec());
    let mut batch_cache = cache.expand_batch(k);
    let embeds = inject(model, &ids_t, &rest)?;
    model.forward(Input::Embeds(&embeds), Some(&mask_t), Some(&mut batch_cache))
}
