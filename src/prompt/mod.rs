//! A prompt = a format (where the trainable tokens go) + a provider (what they are). It adds its prompt token
//! to the tokenizer and turns token ids into input embeddings for the frozen model.

mod inject;
mod io;
mod multi;
mod peft;
mod torch_pickle;

use anyhow::{ensure, Result};
use tch::{nn, Tensor};

pub use inject::{inject, Injection};
pub use io::{PROMPT_FILE, STATE_FILE, TORCH_FILE, WEIGHTS_FILE};
pub use multi::MultiPrompt;
pub use peft::{PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE};

use crate::format::PromptFormat;
use crate::model::Gpt2;
use crate::provider::{Provider, ProviderConfig, ProviderInit};
use crate::tokenizer::Tokenizer;

/// A trainable prompt. Its parameters live in their own `VarStore`, apart from the frozen backbone's tensors.
#[derive(Debug)]
pub struct Prompt {
    format: PromptFormat,
    provider_config: ProviderConfig,
    vs: nn::VarStore,
    provider: Box<dyn Provider>,
    embedding_dim: i64,
    /// The backbone this prompt was made for (`config.pretrained_model_name` in `prompt.json`).
    pub pretrained_model_name: Option<String>,
}

impl Prompt {
    /// A fresh prompt for `model`: the provider is initialised from the model's embeddings and the format's
    /// phrase tokens, on the model's device.
    pub fn new(format: PromptFormat, provider_config: ProviderConfig, model: &Gpt2) -> Result<Self> {
        // Checked before anything is allocated: `<P*99999999>` would otherwise ask for gigabytes.
        let (length, positions) = (format.prompt_length(), model.config().n_positions);
        anyhow::ensure!(
            length as i64 <= positions,
            "the format has {length} prompt tokens, more than the model's {positions} positions (n_positions)"
        );
        let embeddings = Some(model.token_embeddings());
        Self::build(format, provider_config, model.config().n_embd, model.device(), embeddings)
    }

    /// `embeddings` is `None` when the parameters are about to be loaded.
    fn build(
        format: PromptFormat,
        provider_config: ProviderConfig,
        embedding_dim: i64,
        device: tch::Device,
        embeddings: Option<&Tensor>,
    ) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let init = ProviderInit {
            prompt_length: format.prompt_length() as i64,
            embedding_dim,
            embeddings,
            init_tokens: format.init_tokens(),
        };
        let provider = crate::rng::unseeded(|| tch::no_grad(|| provider_config.build(vs.root(), &init)))?;
        Ok(Self { format, provider_config, vs, provider, embedding_dim, pretrained_model_name: None })
    }

    pub fn format(&self) -> &PromptFormat {
        &self.format
    }

    pub fn provider_config(&self) -> &ProviderConfig {
        &self.provider_config
    }

    /// The trainable parameters (give this to an optimizer).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    pub fn embedding_dim(&self) -> i64 {
        self.embedding_dim
    }

    /// Number of trainable parameters.
    pub fn num_parameters(&self) -> i64 {
        self.provider_config.num_parameters(self.format.prompt_length() as i64, self.embedding_dim)
    }

    /// Overwrites the provider's parameters from named tensors (PyTorch state-dict names, e.g. `weights` or
    /// `lstm.weight_ih_l0`); every parameter must be given with its exact shape, and nothing else.
    pub fn set_state(&mut self, named: &[(String, Tensor)]) -> Result<()> {
        let mut vars = self.vs.variables();
        for (name, value) in named {
            let var = vars.remove(name).ok_or_else(|| {
                anyhow::anyhow!("the {} provider has no parameter '{name}'", self.provider_config.name())
            })?;
            ensure!(
                var.size() == value.size(),
                "parameter '{name}' has shape {:?} in the {} provider but {:?} was given",
                var.size(),
                self.provider_config.name(),
                value.size()
            );
            tch::no_grad(|| var.shallow_clone().copy_(value));
        }
        if let Some(missing) = vars.keys().next() {
            anyhow::bail!("parameter '{missing}' of the {} provider was not given", self.provider_config.name());
        }
        Ok(())
    }

    /// The prompt embeddings `[L, d]`; compute once per step and share across the batch.
    pub fn embeddings(&self) -> Tensor {
        self.provider.forward()
    }

    /// Adds the prompt token to `tokenizer` (a normal added token, like ruPrompts) and returns its id.
    pub fn add_token(&self, tokenizer: &mut Tokenizer) -> Result<i64> {
        Ok(i64::from(tokenizer.add_tokens(&[self.format.prompt_token()])?[0]))
    }

    /// This prompt's embeddings, computed now, ready to inject at `token_id`. At inference compute it once per
    /// request; in training once per step (gradients flow through it).
    pub fn injection(&self, token_id: i64) -> Injection<'_> {
        Injection { name: self.format.prompt_token(), token_id, embeddings: self.embeddings() }
    }

    /// Input embeddings of `ids` with this prompt injected at `token_id` (see [`inject`]).
    pub fn embed(&self, model: &Gpt2, ids: &Tensor, token_id: i64) -> Result<Tensor> {
        inject(model, ids, &[self.injection(token_id)])
    }
}
