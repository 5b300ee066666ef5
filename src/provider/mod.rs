//! Prompt providers: the trainable parameters behind a prompt. Each turns its parameters into the prompt's
//! embeddings `[prompt_len, d_model]`; the prompt writes them into the positions of its prompt tokens.

mod lstm;
mod mlp;
mod tensor;

use std::collections::BTreeMap;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

pub use lstm::LstmProvider;
pub use mlp::MlpProvider;
pub use tensor::{TensorInit, TensorProvider};

/// A source of prompt embeddings whose parameters live in a `VarStore` path, named as PyTorch names them.
pub trait Provider: std::fmt::Debug + Send {
    /// The prompt embeddings `[prompt_len, d_model]` (f32).
    fn forward(&self) -> Tensor;
}

/// What a provider is built from.
#[derive(Debug)]
pub struct ProviderInit<'a> {
    pub prompt_length: i64,
    pub embedding_dim: i64,
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
        anyhow::ensure!(init.prompt_length >= 1, "a prompt needs at least one trainable token");
        Ok(match self {
            Self::Tensor { init: how } => Box::new(TensorProvider::new(path, init, *how)?),
            Self::Lstm { hidden_dim, input_dim, num_layers } => {
                let d = init.embedding_dim;
                Box::new(LstmProvider::new(path, init, input_dim.unwrap_or(d), hidden_dim.unwrap_or(d), *num_layers)?)
            }
            Self::Mlp { hidden_dim } => {
                Box::new(MlpProvider::new(path, init, hidden_dim.unwrap_or(init.embedding_dim))?)
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Tensor { .. } => "tensor",
            Self::Lstm { .. } => "lstm",
            Self::Mlp { .. } => "mlp",
        }
    }
}
