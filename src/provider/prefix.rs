//! Deep prompts (prefix tuning, Li & Liang 2021; P-tuning v2): trained keys and values ahead of the input in every
//! layer, as PEFT's `PREFIX_TUNING` builds them. Optionally reparametrised through PEFT's `prefix_projection` MLP
//! (Embedding → Linear → Tanh → Linear). The format's own prompt tokens, if any, get a tensor of their own.

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::Tensor;

use super::tensor::TensorProvider;
use super::{Provider, ProviderInit, TensorInit};

/// PEFT's `prefix_projection` MLP: `encoder_hidden_size` is its hidden size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Projection {
    /// Default: the key width (the backbone's embedding size without grouped-query attention), PEFT's default.
    #[serde(default)]
    pub hidden_dim: Option<i64>,
}

#[derive(Debug)]
enum Keys {
    /// `embedding.weight [N, layers·2·d]`: the prefix itself (PEFT without projection).
    Plain(Tensor),
    /// `embedding.weight [N, d]` through `transform.{0,2}` (PEFT with projection).
    Projected { embedding: Tensor, transform: nn::Sequential },
}

#[derive(Debug)]
pub struct PrefixProvider {
    keys: Keys,
    /// The format's input-layer prompt tokens (`[L, d]`), named `tokens.weights`; `None` when the format has none.
    tokens: Option<TensorProvider>,
    embedding_dim: i64,
    device: tch::Device,
}

impl PrefixProvider {
    pub fn new(
        path: nn::Path,
        init: &ProviderInit,
        num_virtual_tokens: i64,
        projection: Option<Projection>,
        tokens: TensorInit,
    ) -> Result<Self> {
        ensure!(num_virtual_tokens >= 1, "prompt_provider.num_virtual_tokens must be at least 1");
        // PEFT sizes everything by the key width (`token_dim`): the embedding size, less with grouped-query attention.
        let (n, d, k) = (num_virtual_tokens, init.embedding_dim, init.kv_dim);
        let width = init.num_layers * 2 * k;
        let normal = nn::Init::Randn { mean: 0.0, stdev: 1.0 };
        let keys = match projection {
            None => Keys::Plain((&path / "embedding").var("weight", &[n, width], normal)),
            Some(Projection { hidden_dim }) => {
                let h = hidden_dim.unwrap_or(k);
                ensure!(h > 0, "prompt_provider.projection.hidden_dim must be positive");
                let embedding = (&path / "embedding").var("weight", &[n, k], normal);
                let t = &path / "transform";
                let transform = nn::seq()
                    .add(nn::linear(&t / "0", k, h, Default::default()))
                    .add_fn(|x| x.tanh())
                    .add(nn::linear(&t / "2", h, width, Default::default()));
                Keys::Projected { embedding, transform }
            }
        };
        let tokens =
            (init.prompt_length > 0).then(|| TensorProvider::new(&path / "tokens", init, tokens)).transpose()?;
        Ok(Self { keys, tokens, embedding_dim: d, device: path.device() })
    }
}

impl Provider for PrefixProvider {
    fn forward(&self) -> Tensor {
        match &self.tokens {
            Some(tokens) => tokens.forward(),
            None => Tensor::zeros([0, self.embedding_dim], (tch::Kind::Float, self.device)),
        }
    }

    fn prefix(&self) -> Option<Tensor> {
        Some(match &self.keys {
            Keys::Plain(weight) => weight.shallow_clone(),
            Keys::Projected { embedding, transform } => transform.forward(embedding),
        })
    }
}
