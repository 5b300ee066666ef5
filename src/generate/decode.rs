//! Batched decoding: rows of different lengths are left-padded into one batch, the first forward reads them
//! (with prompt embeddings injected), then one forward per new token feeds only that token through the KV cache.
//! Position ids come from the attention mask, so a row decodes the same whatever else is in its batch. Greedy
//! decoding and sampling live here; beam search in [`super::beam`].

use std::ops::ControlFlow;

use anyhow::{ensure, Result};
use tch::{Kind, Tensor};

use super::logits::{next_tokens, Processors, Row, Streams};
use super::GenerationConfig;
use crate::model::{pad, KvCache, Model, Side};
use crate::prompt::{inject, Injected, Injection};
use crate::tokenizer::Tokenizer;

/// The most rows one call decodes together (inputs × sequences or beams).
const MAX_ROWS: usize = 1 << 16;

/// What one output sequence got: the new token ids (ending with eos when it stopped there), a score per token
/// (the chosen token's logit for greedy decoding and sampling; its processed log-probability under beam search,
/// as transformers' `compute_transition_scores` gives it) and, under beam search, the sequence's score (its
/// log-probability over length^length_penalty, transformers' `sequences_scores`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Generated {
    pub new_ids: Vec<i64>,
    pub scores: Vec<f32>,
    pub sequence_score: Option<f32>,
}

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

/// When a row ends: on eos, or once its new text holds a stop string.
pub(super) struct Stops<'a> {
    tokenizer: &'a Tokenizer,
    eos: Option<i64>,
    strings: &'a [String],
}

impl<'a> Stops<'a> {
    pub fn new(tokenizer: &'a Tokenizer, config: &'a GenerationConfig) -> Self {
        Self { tokenizer, eos: config.eos_token_id, strings: &config.stop_strings }
    }

    /// Whether a row of `input` whose new tokens are `new_ids` has ended.
    pub fn hit(&self, input: &[i64], new_ids: &[i64]) -> Result<bool> {
        if new_ids.last().is_some_and(|&t| Some(t) == self.eos) {
            return Ok(true);
        }
        if self.strings.is_empty() {
            return Ok(false);
        }
        let text = self.tokenizer.decode_after(input, new_ids)?;
        Ok(self.strings.iter().any(|s| text.contains(s.as_str())))
    }
}

/// `text` up to the first stop string in it: what a row that ended there says.
pub fn cut_at_stop<'t>(text: &'t str, stop_strings: &[String]) -> &'t str {
    let end = stop_strings.iter().filter_map(|s| text.find(s.as_str())).min().unwrap_or(text.len());
    &text[..end]
}

/// How much of a growing `text` cannot change any more (bytes): all but an unfinished UTF-8 character (shown by
/// the decoder as U+FFFD) and an ending that could start a stop string. What streams may show so far.
pub fn settled(text: &str, stop_strings: &[String]) -> usize {
    let mut end = text.trim_end_matches('\u{FFFD}').len();
    for stop in stop_strings {
        let held =
            (1..stop.len()).rev().find(|&k| stop.is_char_boundary(k) && text[..end].ends_with(&stop[..k])).unwrap_or(0);
        end -= held;
    }
    end
}

/// Each row's real tokens (padding left out) followed by its new ones, for the logits processors.
pub(super) fn histories(inputs: &[&Vec<i64>], new: &[&[i64]]) -> Vec<Vec<i64>> {
    inputs.iter().zip(new).map(|(input, new)| input.iter().chain(new.iter()).copied().collect()).collect()
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

/// Rows decoded together: left-padded into one batch whose first forward reads them with the prompts injected;
/// after that each step feeds one new token per row through the KV cache, or without it re-reads every row whole.
pub(super) struct Batch<'a> {
    model: &'a Model,
    injections: &'a [Injection<'a>],
    ids: Tensor,
    mask: Tensor,
    cache: Option<KvCache>,
    /// What the next forward reads.
    embeds: Injected,
}

impl<'a> Batch<'a> {
    pub fn new(model: &'a Model, rows: &[&Vec<i64>], injections: &'a [Injection<'a>], use_cache: bool) -> Result<Self> {
        let slices: Vec<&[i64]> = rows.iter().map(|r| r.as_slice()).collect();
        let (ids, mask) = pad(&slices, 0, Side::Left);
        let (ids, mask) = (ids.to_device(model.device()), mask.to_device(model.device()));
        let embeds = inject(model, &ids, injections)?;
        Ok(Self { model, injections, ids, mask, cache: use_cache.then(|| model.new_cache()), embeds })
    }

    /// Logits `[rows, V]` of each row's next token.
    pub fn logits(&mut self) -> Result<Tensor> {
        let last = self.embeds.embeds.size()[1] - 1;
        let hidden = self.model.forward_from(self.embeds.input(), Some(&self.mask), self.cache.as_mut(), last)?;
        Ok(self.model.next_token_logits(&hidden.select(1, 0)))
    }

    /// Appends token `next[r]` to row r; with `parents`, row r first becomes a copy of row `parents[r]` (beam
    /// search following its hypotheses), the cache reordered, not re-run.
    pub fn advance(&mut self, next: &Tensor, parents: Option<&[i64]>) -> Result<()> {
        if let Some(parents) = parents {
            let rows = Tensor::from_slice(parents).to_device(self.mask.device());
            self.mask = self.mask.index_select(0, &rows);
            // The ids are read again only without a cache.
            match self.cache.as_mut() {
                Some(cache) => cache.reorder(parents),
                None => self.ids = self.ids.index_select(0, &rows),
            }
        }
        let next = next.unsqueeze(1).to_device(self.mask.device());
        self.mask = Tensor::cat(&[&self.mask, &self.mask.ones_like().narrow(1, 0, 1)], 1);
        self.embeds = match self.cache {
            Some(_) => Injected { embeds: self.model.embed(&next)?, deep: None },
            None => {
                self.ids = Tensor::cat(&[&self.ids, &next], 1);
                inject(self.model, &self.ids, self.injections)?
            }
        };
        Ok(())
    }
}

/// Outputs in input order, `n` per input.
fn group(out: Vec<Generated>, inputs: usize, n: usize) -> Vec<Vec<Generated>> {
    let mut it = out.into_iter();
    (0..inputs).map(|_| it.by_ref().take(n).collect()).collect()
}
