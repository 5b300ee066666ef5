//! Writing prompt embeddings into the positions of their prompt tokens: the one injection routine that single
//! prompts and multi-prompts share. A deep prompt's virtual tokens are prompt tokens too: at their positions the
//! model reads the prompt's keys and values in every layer instead of computing them.

use anyhow::{bail, ensure, Context, Result};
use tch::{Kind, Tensor};

use super::Shape;
use crate::model::{DeepKv, Input, Model};

/// One prompt to inject: its token id and one copy's rows, one per prompt token.
#[derive(Debug)]
pub struct Injection<'a> {
    /// For messages, e.g. the prompt token `<|[qa]P|>`.
    pub name: &'a str,
    pub token_id: i64,
    /// The sizes of the model the prompt was made for.
    pub shape: Shape,
    /// `[C, d]` input embeddings (a virtual token's row is never read).
    pub embeddings: Tensor,
    /// A deep prompt's keys and values, per row of `embeddings`.
    pub deep: Option<DeepRows>,
}

/// A deep prompt's rows: `values [C, layers·2·d]` (PEFT's prefix layout), read where `virtual_ [C]` is true.
#[derive(Debug)]
pub struct DeepRows {
    pub values: Tensor,
    pub virtual_: Tensor,
}

impl Injection<'_> {
    /// Prompt tokens in one copy of the prompt.
    pub fn length(&self) -> i64 {
        self.embeddings.size()[0]
    }

    /// The same prompt cut to the rows `index` (into one copy): what a segment of a row holds when the rest of
    /// the copy went to the segments before it.
    pub fn select(&self, index: &[i64]) -> Self {
        let index = Tensor::from_slice(index).to_device(self.embeddings.device());
        let deep = self.deep.as_ref().map(|d| DeepRows {
            values: d.values.index_select(0, &index),
            virtual_: d.virtual_.index_select(0, &index),
        });
        Injection {
            name: self.name,
            token_id: self.token_id,
            shape: self.shape,
            embeddings: self.embeddings.index_select(0, &index),
            deep,
        }
    }
}

/// Input embeddings with prompts injected, and the deep prompts' keys and values if any prompt has them.
#[derive(Debug)]
pub struct Injected {
    pub embeds: Tensor,
    pub deep: Option<DeepKv>,
}

impl Injected {
    /// What the model reads.
    pub fn input(&self) -> Input<'_> {
        match &self.deep {
            Some(deep) => Input::Deep(&self.embeds, deep),
            None => Input::Embeds(&self.embeds),
        }
    }
}

/// Input embeddings `[B, T, d]` of `ids: [B, T]` with every prompt token replaced by its prompt's rows, in
/// order, wherever it sits. A row holds each prompt's tokens not at all or a whole number of times `C` (rows may
/// use different prompts; several copies are the prompt repeated, as around every few-shot demonstration); any
/// other count is an error naming the row. Each provider output is computed once by the caller and shared by all
/// rows, so gradients from every row reach it.
pub fn inject(model: &Model, ids: &Tensor, prompts: &[Injection]) -> Result<Injected> {
    ensure!(ids.dim() == 2, "input ids must be [batch, seq], got {:?}", ids.size());
    let ids = ids.to_device(model.device());
    let masks: Vec<Tensor> = prompts.iter().map(|p| ids.eq(p.token_id)).collect();
    let mut plain = ids.shallow_clone();
    for mask in &masks {
        // Prompt token ids may lie outside the embedding matrix (ruPrompts gives them id = vocab size).
        plain = plain.masked_fill(mask, 0);
    }
    let mut embeds = model.embed(&plain)?;
    let (mut positions, mut tables, mut indices) = (Vec::new(), Vec::new(), Vec::new());
    let mut table_rows = 0;
    for (prompt, mask) in prompts.iter().zip(&masks) {
        let [length, _] = prompt.embeddings.size()[..] else { bail!("prompt {} is not [length, dim]", prompt.name) };
        let d = model.config().n_embd;
        // A prefix alone has no input rows: its rows' embeddings are never read, whatever their width.
        let all_virtual = match &prompt.deep {
            Some(deep) => bool::try_from(deep.virtual_.all())?,
            None => false,
        };
        prompt
            .shape
            .fits(model.config(), !all_virtual, prompt.deep.is_some())
            .with_context(|| format!("the prompt {} does not fit this model", prompt.name))?;
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
        if copies == 0 {
            continue;
        }
        let source = match all_virtual {
            true => Tensor::zeros([copies * length, d], (model.kind(), model.device())),
            false => prompt.embeddings.to_device(model.device()).to_kind(model.kind()).repeat([copies, 1]),
        };
        embeds = embeds.masked_scatter(&mask.unsqueeze(-1), &source);
        if let Some(deep) = &prompt.deep {
            // Occurrence j of the prompt token (row-major, as masked_scatter fills) is row j mod C of its copy.
            let device = model.device();
            let slot = Tensor::arange(copies * length, (Kind::Int64, device)).remainder(length);
            let keep = deep.virtual_.to_device(device).index_select(0, &slot).nonzero().squeeze_dim(1);
            positions.push(mask.nonzero().index_select(0, &keep));
            indices.push(slot.index_select(0, &keep) + table_rows);
            tables.push(deep.values.to_device(device));
            table_rows += length;
        }
    }
    let deep = match tables.is_empty() {
        true => None,
        false => Some(DeepKv::new(&Tensor::cat(&positions, 0), Tensor::cat(&tables, 0), Tensor::cat(&indices, 0))?),
    };
    Ok(Injected { embeds, deep })
}
