//! Writing prompt embeddings into the positions of their prompt tokens: the one injection routine that single
//! prompts and multi-prompts share.

use anyhow::{bail, ensure, Result};
use tch::{Kind, Tensor};

use crate::model::Gpt2;

/// One prompt to inject: its token id and embeddings `[L, d]`.
#[derive(Debug)]
pub struct Injection<'a> {
    /// For messages, e.g. the prompt token `<|[qa]P|>`.
    pub name: &'a str,
    pub token_id: i64,
    pub embeddings: Tensor,
}

/// Input embeddings `[B, T, d]` of `ids: [B, T]` with every prompt token replaced by its prompt's rows, in
/// order, wherever it sits. A row holds each prompt's tokens not at all or a whole number of times `L` (rows may
/// use different prompts; several copies are the prompt repeated, as around every few-shot demonstration); any
/// other count is an error naming the row. Each provider output is computed once by the caller and shared by all
/// rows, so gradients from every row reach it.
pub fn inject(model: &Gpt2, ids: &Tensor, prompts: &[Injection]) -> Result<Tensor> {
    ensure!(ids.dim() == 2, "input ids must be [batch, seq], got {:?}", ids.size());
    let ids = ids.to_device(model.device());
    let masks: Vec<Tensor> = prompts.iter().map(|p| ids.eq(p.token_id)).collect();
    let mut plain = ids.shallow_clone();
    for mask in &masks {
        // Prompt token ids may lie outside the embedding matrix (ruPrompts gives them id = vocab size).
        plain = plain.masked_fill(mask, 0);
    }
    let mut embeds = model.embed(&plain)?;
    for (prompt, mask) in prompts.iter().zip(&masks) {
        let [length, dim] = prompt.embeddings.size()[..] else { bail!("prompt {} is not [length, dim]", prompt.name) };
        ensure!(
            dim == model.config().n_embd,
            "the prompt {} has embedding size {dim} but the model has {}",
            prompt.name,
            model.config().n_embd
        );
        let counts = Vec::<i64>::try_from(mask.sum_dim_intlist(1, false, Kind::Int64))?;
        let mut copies = 0;
        for (row, &count) in counts.iter().enumerate() {
            match count {
                c if length > 0 && c % length == 0 => copies += c / length,
                c => bail!(
                    "row {row} holds {c} prompt tokens {} but the prompt has {length} (was the prompt truncated?)",
                    prompt.name
                ),
            }
        }
        if copies > 0 {
            let source = prompt.embeddings.to_device(model.device()).to_kind(model.kind()).repeat([copies, 1]);
            embeds = embeds.masked_scatter(&mask.unsqueeze(-1), &source);
        }
    }
    Ok(embeds)
}
