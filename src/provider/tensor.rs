//! ruPrompts' TensorPromptProvider: the prompt embeddings are the parameters.

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

use super::{Provider, ProviderInit};

/// How a tensor prompt starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TensorInit {
    /// Rows of randomly chosen vocabulary embeddings (ruPrompts' default): `wte[randperm(vocab)[:L]]`.
    #[default]
    Vocab,
    /// Standard normal values.
    Random,
}

#[derive(Debug)]
pub struct TensorProvider {
    /// `[L, d]`, named `weights` as in ruPrompts' state dict.
    weights: Tensor,
}

impl TensorProvider {
    /// Initialises as ruPrompts does, then overwrites phrase positions with their tokens' embeddings.
    pub fn new(path: nn::Path, init: &ProviderInit, how: TensorInit) -> Result<Self> {
        let (l, d) = (init.prompt_length, init.embedding_dim);
        let Some(wte) = init.embeddings else {
            return Ok(Self { weights: path.zeros("weights", &[l, d]) });
        };
        let wte = wte.to_kind(Kind::Float).to_device(path.device());
        let vocab = wte.size()[0];
        let start = match how {
            TensorInit::Vocab => {
                ensure!(l <= vocab, "prompt length {l} exceeds the vocabulary size {vocab} for init 'vocab'");
                wte.index_select(0, &Tensor::randperm(vocab, (Kind::Int64, path.device())).narrow(0, 0, l))
            }
            TensorInit::Random => Tensor::randn([l, d], (Kind::Float, path.device())),
        };
        let start = overwrite_init_rows(start, &wte, init)?;
        let weights = path.var_copy("weights", &start);
        Ok(Self { weights })
    }
}

/// Rows of `init.init_tokens` positions replaced by those tokens' embeddings.
fn overwrite_init_rows(start: Tensor, wte: &Tensor, init: &ProviderInit) -> Result<Tensor> {
    if init.init_tokens.is_empty() {
        return Ok(start);
    }
    let device = start.device();
    let positions: Vec<i64> = init.init_tokens.keys().map(|&k| k as i64).collect();
    let ids: Vec<i64> = init.init_tokens.values().map(|&v| i64::from(v)).collect();
    let vocab = wte.size()[0];
    ensure!(ids.iter().all(|&id| id < vocab), "an init token id is outside the vocabulary ({vocab})");
    ensure!(positions.iter().all(|&p| p < init.prompt_length), "an init token position is past the prompt");
    let rows = wte.index_select(0, &Tensor::from_slice(&ids).to_device(device));
    Ok(start.index_put(&[Some(Tensor::from_slice(&positions).to_device(device))], &rows, false))
}

impl Provider for TensorProvider {
    fn forward(&self) -> Tensor {
        self.weights.shallow_clone()
    }
}
