//! Rows decoded together: rows of different lengths are left-padded into one batch, the first forward reads them
//! (with prompt embeddings injected), then one forward per new token feeds only that token through the KV cache.
//! Position ids come from the attention mask, so a row decodes the same whatever else is in its batch. What each
//! output sequence got, and each row's history for the logits processors.

use anyhow::Result;
use tch::Tensor;

use crate::model::{pad, KvCache, Model, Side};
use crate::prompt::{inject, Injected, Injection};

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

/// Each row's real tokens (padding left out) followed by its new ones, for the logits processors.
pub(super) fn histories(inputs: &[&Vec<i64>], new: &[&[i64]]) -> Vec<Vec<i64>> {
    inputs.iter().zip(new).map(|(input, new)| input.iter().chain(new.iter()).copied().collect()).collect()
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
