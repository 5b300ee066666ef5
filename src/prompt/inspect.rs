//! What a prompt's soft tokens look like from the model's side: each input-layer token's nearest vocabulary tokens
//! (cosine) and its norm against the vocabulary's norms; for every token (a deep prompt's keys and values too) how
//! far it moved from where training started, and how far it had moved at each checkpoint.

use anyhow::{ensure, Context, Result};
use serde::Serialize;
use tch::{Kind, Tensor};

use super::Prompt;
use crate::model::Model;
use crate::tokenizer::Tokenizer;

/// The report of [`inspect`].
#[derive(Debug, Serialize)]
pub struct Inspection {
    pub provider: &'static str,
    pub template: String,
    /// Norms of the vocabulary's embedding rows.
    pub vocab_norms: NormRange,
    /// In prompt-token order: a deep prompt's virtual tokens first, then the format's own.
    pub tokens: Vec<SoftToken>,
    /// Mean distance of the soft tokens from their start at each checkpoint, by step (empty without a start).
    pub history: Vec<Moved>,
}

#[derive(Debug, Serialize)]
pub struct NormRange {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

#[derive(Debug, Serialize)]
pub struct SoftToken {
    pub index: usize,
    /// `input` (an embedding the model reads) or `virtual` (a deep prompt's keys and values in every layer).
    pub kind: &'static str,
    pub norm: f64,
    /// Share of vocabulary rows with a smaller norm (input tokens only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub norm_percentile: Option<f64>,
    /// The nearest vocabulary tokens by cosine, nearest first (input tokens only).
    pub nearest: Vec<Neighbour>,
    /// How far it is from its start (when the start is known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved: Option<Distance>,
}

#[derive(Debug, Serialize)]
pub struct Neighbour {
    pub id: i64,
    pub token: String,
    pub cosine: f64,
}

#[derive(Debug, Serialize)]
pub struct Distance {
    /// L2 distance from the start.
    pub distance: f64,
    /// Cosine between the start and now.
    pub cosine_to_start: f64,
}

#[derive(Debug, Serialize)]
pub struct Moved {
    pub step: usize,
    pub mean_distance: f64,
}

/// Every soft token's vector: virtual tokens' keys and values `[N, layers·2·d]`, input tokens `[L, d]`.
fn soft_tokens(prompt: &Prompt) -> (Option<Tensor>, Tensor) {
    tch::no_grad(|| (prompt.prefix().map(|p| p.to_kind(Kind::Double)), prompt.embeddings().to_kind(Kind::Double)))
}

/// Row-wise L2 distances of two prompts' soft tokens, virtual then input.
fn distances(now: &Prompt, start: &Prompt) -> Result<Vec<Distance>> {
    let ((a_deep, a), (b_deep, b)) = (soft_tokens(now), soft_tokens(start));
    let pairs: Vec<(Tensor, Tensor)> = a_deep.into_iter().zip(b_deep).chain(std::iter::once((a, b))).collect();
    let mut out = Vec::new();
    for (a, b) in pairs {
        ensure!(a.size() == b.size(), "the start has shape {:?} where the prompt has {:?}", b.size(), a.size());
        let distance = Vec::<f64>::try_from((&a - &b).norm_scalaropt_dim(2.0, [1], false))?;
        let cosine = Vec::<f64>::try_from(Tensor::cosine_similarity(&a, &b, 1, 1e-12))?;
        out.extend(
            distance.into_iter().zip(cosine).map(|(distance, cosine_to_start)| Distance { distance, cosine_to_start }),
        );
    }
    Ok(out)
}

/// Inspects `prompt` against `model`'s vocabulary (`top` neighbours a token). `start` is where training began and
/// `checkpoints` the prompt at each saved step.
pub fn inspect(
    prompt: &Prompt,
    model: &Model,
    tokenizer: &Tokenizer,
    top: usize,
    start: Option<&Prompt>,
    checkpoints: &[(usize, Prompt)],
) -> Result<Inspection> {
    prompt.fits(model).context("the prompt does not fit the model")?;
    let wte = model.token_embeddings().to_device(tch::Device::Cpu).to_kind(Kind::Double);
    let (vocab, _) = wte.size2()?;
    let norms = wte.norm_scalaropt_dim(2.0, [1], false);
    let sorted = Vec::<f64>::try_from(norms.sort(0, false).0)?;
    let vocab_norms = NormRange { min: sorted[0], median: sorted[sorted.len() / 2], max: sorted[sorted.len() - 1] };
    let (deep, input) = soft_tokens(prompt);
    let moved = start.map(|s| distances(prompt, s)).transpose()?;
    let mut moved = moved.map(|m| m.into_iter().map(Some).collect::<Vec<_>>()).unwrap_or_default().into_iter();
    let mut tokens = Vec::new();
    if let Some(deep) = deep {
        for norm in Vec::<f64>::try_from(deep.norm_scalaropt_dim(2.0, [1], false))? {
            let index = tokens.len();
            let moved = moved.next().flatten();
            tokens.push(SoftToken { index, kind: "virtual", norm, norm_percentile: None, nearest: Vec::new(), moved });
        }
    }
    if input.size()[0] > 0 {
        let unit = |t: &Tensor| t / t.norm_scalaropt_dim(2.0, [1], true).clamp_min(1e-12);
        let (values, ids) = unit(&input).matmul(&unit(&wte).tr()).topk(top.min(vocab as usize) as i64, 1, true, true);
        let own = Vec::<f64>::try_from(input.norm_scalaropt_dim(2.0, [1], false))?;
        for (row, norm) in own.into_iter().enumerate() {
            let nearest = Vec::<i64>::try_from(ids.get(row as i64))?
                .into_iter()
                .zip(Vec::<f64>::try_from(values.get(row as i64))?)
                .map(|(id, cosine)| Ok(Neighbour { id, token: tokenizer.decode_token(id)?, cosine }))
                .collect::<Result<Vec<_>>>()?;
            let below = sorted.partition_point(|&n| n < norm) as f64 / sorted.len() as f64;
            let index = tokens.len();
            let moved = moved.next().flatten();
            tokens.push(SoftToken { index, kind: "input", norm, norm_percentile: Some(below), nearest, moved });
        }
    }
    let history = match start {
        Some(start) => checkpoints
            .iter()
            .map(|(step, p)| {
                let d = distances(p, start)?;
                Ok(Moved {
                    step: *step,
                    mean_distance: d.iter().map(|x| x.distance).sum::<f64>() / d.len().max(1) as f64,
                })
            })
            .collect::<Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    Ok(Inspection {
        provider: prompt.provider_config().name(),
        template: prompt.format().template().to_string(),
        vocab_norms,
        tokens,
        history,
    })
}
