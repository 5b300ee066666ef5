//! Prompt providers: the trainable parameters behind a prompt. Each turns its parameters into the prompt's
//! embeddings `[prompt_len, d_model]`; the prompt writes them into the positions of its prompt tokens. A deep
//! (prefix) provider also gives keys and values for every layer.

mod lstm;
mod mlp;
mod prefix;
mod tensor;

use std::collections::BTreeMap;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

pub use lstm::LstmProvider;
pub use mlp::MlpProvider;
pub use prefix::{PrefixProvider, Projection};
pub use tensor::{TensorInit, TensorProvider};

/// A source of prompt embeddings whose parameters live in a `VarStore` path, named as PyTorch names them.
pub trait Provider: std::fmt::Debug + Send {
    /// The prompt embeddings `[prompt_len, d_model]` (f32).
    fn forward(&self) -> Tensor;

    /// A deep prompt's keys and values `[num_virtual_tokens, layers·2·k]` (f32, `k` the key width), laid out as
    /// PEFT's prefix encoder returns them: per virtual token, layer `i`'s key at `2i·k` and its value at `(2i+1)·k`.
    fn prefix(&self) -> Option<Tensor> {
        None
    }
}

/// What a provider is built from.
#[derive(Debug)]
pub struct ProviderInit<'a> {
    /// The format's input-layer prompt tokens (a deep prompt's virtual tokens not counted).
    pub prompt_length: i64,
    pub embedding_dim: i64,
    /// Transformer layers of the backbone (a deep prompt has keys and values for each).
    pub num_layers: i64,
    /// Width of one layer's keys for one position (the embedding size, or less with grouped-query attention).
    pub kv_dim: i64,
    /// The backbone's token embeddings `[vocab, d]`; `None` when parameters will be loaded right after.
    pub embeddings: Option<&'a Tensor>,
    /// Prompt position → token id whose embedding initialises it (from `<P>phrase</P>`).
    pub init_tokens: &'a BTreeMap<usize, u32>,
}

/// Which provider to use and its options, as written in configs and `prompt.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ProviderConfig {
    /// A plain `[L, d]` tensor (ruPrompts' TensorPromptProvider).
    Tensor {
        #[serde(default)]
        init: TensorInit,
    },
    /// Learned input → bidirectional LSTM → Linear(2H→H) → ReLU → Linear(H→d) (ruPrompts' LSTMPromptProvider).
    Lstm {
        /// LSTM hidden size; default: the backbone's embedding size.
        #[serde(default)]
        hidden_dim: Option<i64>,
        /// Size of the learned input; default: the backbone's embedding size.
        #[serde(default)]
        input_dim: Option<i64>,
        #[serde(default = "default_lstm_layers")]
        num_layers: i64,
    },
    /// Embedding → Linear → ReLU → Linear → ReLU → Linear (PEFT's P-tuning encoder).
    Mlp {
        /// Hidden size; default: the backbone's embedding size.
        #[serde(default)]
        hidden_dim: Option<i64>,
    },
    /// Trained keys and values ahead of the input in every layer (PEFT's PREFIX_TUNING), optionally through
    /// PEFT's projection MLP. The format's own prompt tokens, if any, are a tensor initialised as `init` says.
    Prefix {
        num_virtual_tokens: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        projection: Option<Projection>,
        #[serde(default)]
        init: TensorInit,
    },
}

fn default_lstm_layers() -> i64 {
    2
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self::Tensor { init: TensorInit::default() }
    }
}

impl ProviderConfig {
    /// Creates the provider's parameters under `path` (freshly initialised).
    pub fn build(&self, path: nn::Path, init: &ProviderInit) -> Result<Box<dyn Provider>> {
        anyhow::ensure!(
            init.prompt_length + self.virtual_tokens() >= 1,
            "a prompt needs at least one trainable token: put <P*N> in the format or use a prefix provider"
        );
        anyhow::ensure!(
            init.prompt_length >= 1 || matches!(self, Self::Prefix { .. }),
            "the {} provider needs prompt tokens in the format (<P*N>)",
            self.name()
        );
        Ok(match self {
            Self::Tensor { init: how } => Box::new(TensorProvider::new(path, init, *how)?),
            Self::Lstm { hidden_dim, input_dim, num_layers } => {
                let d = init.embedding_dim;
                Box::new(LstmProvider::new(path, init, input_dim.unwrap_or(d), hidden_dim.unwrap_or(d), *num_layers)?)
            }
            Self::Mlp { hidden_dim } => {
                Box::new(MlpProvider::new(path, init, hidden_dim.unwrap_or(init.embedding_dim))?)
            }
            Self::Prefix { num_virtual_tokens, projection, init: how } => {
                Box::new(PrefixProvider::new(path, init, *num_virtual_tokens, *projection, *how)?)
            }
        })
    }

    /// A deep prompt's virtual tokens: the positions ahead of the format whose keys and values it gives.
    pub fn virtual_tokens(&self) -> i64 {
        match *self {
            Self::Prefix { num_virtual_tokens, .. } => num_virtual_tokens,
            _ => 0,
        }
    }

    /// Trainable parameters of this provider for a prompt of `prompt_length` input-layer tokens on a backbone of
    /// `embedding_dim`, `num_layers` and keys of `kv_dim`, counted from the layer shapes without allocating them
    /// (13B-sized BiLSTMs are gigabytes). `None` when the count does not fit in an i64 (sizes nobody can build).
    pub fn num_parameters(&self, prompt_length: i64, embedding_dim: i64, num_layers: i64, kv_dim: i64) -> Option<i64> {
        let (l, d) = (prompt_length, embedding_dim);
        let mul = |a: i64, b: i64| a.checked_mul(b);
        let add = |a: i64, b: i64| a.checked_add(b);
        let linear = |i: i64, o: i64| add(mul(i, o)?, o);
        match *self {
            Self::Tensor { .. } => mul(l, d),
            Self::Lstm { hidden_dim, input_dim, num_layers } => {
                let (h, i) = (hidden_dim.unwrap_or(d), input_dim.unwrap_or(d));
                let h4 = mul(4, h)?;
                // Per direction and layer: weight_ih [4h, in], weight_hh [4h, h], two biases [4h].
                let layer = |input: i64| mul(2, add(add(mul(h4, input)?, mul(h4, h)?)?, mul(8, h)?)?);
                let lstm = add(layer(i)?, mul(num_layers - 1, layer(mul(2, h)?)?)?)?;
                add(add(add(mul(l, i)?, lstm)?, linear(mul(2, h)?, h)?)?, linear(h, d)?)
            }
            Self::Mlp { hidden_dim } => {
                let h = hidden_dim.unwrap_or(d);
                add(add(add(mul(l, d)?, linear(d, h)?)?, linear(h, h)?)?, linear(h, d)?)
            }
            Self::Prefix { num_virtual_tokens: n, projection, .. } => {
                let (k, width) = (kv_dim, mul(mul(num_layers, 2)?, kv_dim)?);
                let keys = match projection {
                    None => mul(n, width)?,
                    Some(Projection { hidden_dim }) => {
                        let h = hidden_dim.unwrap_or(k);
                        add(add(mul(n, k)?, linear(k, h)?)?, linear(h, width)?)?
                    }
                };
                add(keys, mul(l, d)?)
            }
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Tensor { .. } => "tensor",
            Self::Lstm { .. } => "lstm",
            Self::Mlp { .. } => "mlp",
            Self::Prefix { .. } => "prefix",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape-based count equals the number of parameters a built provider really has.
    #[test]
    fn parameter_count_matches_built_providers() {
        let configs = [
            ProviderConfig::default(),
            ProviderConfig::Lstm { hidden_dim: None, input_dim: None, num_layers: 2 },
            ProviderConfig::Lstm { hidden_dim: Some(7), input_dim: Some(5), num_layers: 3 },
            ProviderConfig::Lstm { hidden_dim: Some(4), input_dim: Some(6), num_layers: 1 },
            ProviderConfig::Mlp { hidden_dim: None },
            ProviderConfig::Mlp { hidden_dim: Some(9) },
            ProviderConfig::Prefix { num_virtual_tokens: 3, projection: None, init: TensorInit::Vocab },
            ProviderConfig::Prefix {
                num_virtual_tokens: 2,
                projection: Some(Projection { hidden_dim: Some(7) }),
                init: TensorInit::Random,
            },
            ProviderConfig::Prefix {
                num_virtual_tokens: 4,
                projection: Some(Projection { hidden_dim: None }),
                init: TensorInit::Vocab,
            },
        ];
        let no_phrases = BTreeMap::new();
        for config in configs {
            for (l, d, layers, kv) in [(1, 8, 2, 8), (5, 12, 3, 4)] {
                let vs = nn::VarStore::new(tch::Device::Cpu);
                let init = ProviderInit {
                    prompt_length: l,
                    embedding_dim: d,
                    num_layers: layers,
                    kv_dim: kv,
                    embeddings: None,
                    init_tokens: &no_phrases,
                };
                crate::rng::unseeded(|| config.build(vs.root(), &init)).unwrap();
                let built: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
                assert_eq!(config.num_parameters(l, d, layers, kv), Some(built), "{config:?} L={l} d={d} kv={kv}");
            }
        }
    }
}
