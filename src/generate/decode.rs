//! The entry of batched decoding: the arguments checked, then greedy decoding and sampling here, or beam search
//! ([`super::beam`]), both over the rows of a [`Batch`].

use std::ops::ControlFlow;

use anyhow::{ensure, Result};
use tch::Kind;

use super::batch::{histories, Batch, Generated};
use super::logits::{next_tokens, Processors, Row, Streams};
use super::stops::Stops;
use super::GenerationConfig;
use crate::model::Model;
use crate::prompt::Injection;
use crate::tokenizer::Tokenizer;

/// The most rows one call decodes together (inputs × sequences or beams).
const MAX_ROWS: usize = 1 << 16;

/// Hears every output after each new token; `Break` ends decoding with the outputs as they are, an error ends
/// it with that error.
pub type Watch<'a> = dyn FnMut(&[Generated]) -> Result<ControlFlow<()>> + 'a;

/// Continues every row of `inputs` (token ids, prompt tokens included where the format puts them), with the
/// prompts of `injections` written into their tokens' positions; the prompt embeddings inside `injections` are
/// computed once by the caller. `tokenizer` turns bad words into tokens and new tokens into text for stop
/// strings. Returns `num_return_sequences` outputs per input, in input order (beam search: best first).
pub fn generate(
    model: &Model,
    tokenizer: &Tokenizer,
    inputs: &[Vec<i64>],
    injections: &[Injection],
    config: &GenerationConfig,
) -> Result<Vec<Vec<Generated>>> {
    generate_watched(model, tokenizer, inputs, injections, config, &mut |_| Ok(ControlFlow::Continue(())))
}

/// [`generate`], telling `watch` the outputs after each new token (greedy decoding and sampling; beam search
/// settles its outputs only at the end and tells nothing).
pub fn generate_watched(
    model: &Model,
    tokenizer: &Tokenizer,
    inputs: &[Vec<i64>],
    injections: &[Injection],
    config: &GenerationConfig,
    watch: &mut Watch,
) -> Result<Vec<Vec<Generated>>> {
    ensure!(!inputs.is_empty(), "nothing to generate from: no inputs");
    ensure!(inputs.iter().all(|r| !r.is_empty()), "an input is empty: generation needs at least one token");
    config.validate()?;
    let vocab = model.config().vocab_size;
    ensure!(
        config.num_beams as u64 <= vocab as u64 / 2,
        "num_beams (--num-beams) {} is more than half the model's {vocab} tokens",
        config.num_beams
    );
    if let Some(eos) = config.eos_token_id {
        // An id outside the vocabulary is never decoded: it would never end a row.
        ensure!(
            (0..vocab).contains(&eos),
            "eos_token_id (--eos-token-id) {eos} is not one of the model's {vocab} token ids (0 to {})",
            vocab - 1
        );
    }
    // Rows decoded at once; far past any memory, a typo (a huge --num-return-sequences) is refused, not allocated.
    let per_input = config.num_return_sequences.max(config.num_beams);
    let rows = inputs.len().checked_mul(per_input).filter(|&r| r <= MAX_ROWS);
    ensure!(
        rows.is_some(),
        "inputs ({}) × sequences per input ({per_input}: num_return_sequences, num_beams) is more than {MAX_ROWS} \
         rows decoded at once: lower --num-return-sequences, --num-beams or --batch-size",
        inputs.len()
    );
    let processors = Processors::new(config, tokenizer, vocab)?;
    let stops = Stops::new(tokenizer, config);
    if config.num_beams > 1 {
        super::beam::search(model, inputs, injections, config, &processors, &stops)
    } else {
        decode(model, inputs, injections, config, &processors, &stops, watch)
    }
}

/// Greedy decoding or sampling, on checked arguments.
fn decode(
    model: &Model,
    inputs: &[Vec<i64>],
    injections: &[Injection],
    config: &GenerationConfig,
    processors: &Processors,
    stops: &Stops,
    watch: &mut Watch,
) -> Result<Vec<Vec<Generated>>> {
    let _guard = tch::no_grad_guard();
    let n = config.num_return_sequences;
    let rows: Vec<&Vec<i64>> = inputs.iter().flat_map(|r| std::iter::repeat_n(r, n)).collect();
    let mut batch = Batch::new(model, &rows, injections, config.use_cache)?;
    let mut out: Vec<Generated> = vec![Generated::default(); rows.len()];
    let mut finished = vec![false; rows.len()];
    let mut streams = Streams::new(config.seed, inputs.len(), n);
    for _ in 0..config.max_new_tokens {
        let logits = batch.logits()?;
        let new: Vec<&[i64]> = out.iter().map(|g| g.new_ids.as_slice()).collect();
        let tokens = histories(&rows, &new);
        let states: Vec<Row> = tokens.iter().zip(&new).map(|(t, new)| Row { tokens: t, new: new.len() }).collect();
        let next = next_tokens(&logits, &states, processors, config, &mut streams)?;
        let chosen = logits.gather(1, &next.unsqueeze(1), false).squeeze_dim(1).to_kind(Kind::Float);
        let (next_ids, chosen) = (Vec::<i64>::try_from(&next)?, Vec::<f32>::try_from(&chosen)?);
        for (r, (&token, &score)) in next_ids.iter().zip(&chosen).enumerate() {
            if finished[r] {
                continue;
            }
            out[r].new_ids.push(token);
            out[r].scores.push(score);
            finished[r] = stops.hit(rows[r], &out[r].new_ids)?;
        }
        if watch(&out)?.is_break() || finished.iter().all(|&f| f) {
            break;
        }
        batch.advance(&next, None)?;
    }
    Ok(group(out, inputs.len(), n))
}

/// Outputs in input order, `n` per input.
fn group(out: Vec<Generated>, inputs: usize, n: usize) -> Vec<Vec<Generated>> {
    let mut it = out.into_iter();
    (0..inputs).map(|_| it.by_ref().take(n).collect()).collect()
}
