//! A prompt = a format (where the trainable tokens go) + a provider (what they are). It adds its prompt token
//! to the tokenizer and turns token ids into input embeddings for the frozen model.

mod inject;
mod inspect;
mod io;
mod multi;
mod peft;
mod shape;
mod torch_pickle;

use anyhow::{ensure, Result};
use tch::{nn, Tensor};

pub use inject::{inject, DeepRows, Injected, Injection};
pub use inspect::{inspect, Inspection};
pub use io::{PROMPT_FILE, STATE_FILE, TORCH_FILE, WEIGHTS_FILE};
pub use multi::MultiPrompt;
pub use peft::{PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE};
pub use shape::Shape;

use crate::format::PromptFormat;
use crate::model::Model;
use crate::provider::{Provider, ProviderConfig, ProviderInit};
use crate::tokenizer::Tokenizer;

/// A trainable prompt. Its parameters live in their own `VarStore`, apart from the frozen backbone's tensors.
#[derive(Debug)]
pub struct Prompt {
    format: PromptFormat,
    provider_config: ProviderConfig,
    vs: nn::VarStore,
    provider: Box<dyn Provider>,
    shape: Shape,
    /// The backbone this prompt was made for (`config.pretrained_model_name` in `prompt.json`).
    pub pretrained_model_name: Option<String>,
}

impl Prompt {
    /// A fresh prompt for `model`: the provider is initialised from the model's embeddings and the format's
    /// phrase tokens, on the model's device. A deep prompt's virtual tokens go ahead of the format.
    pub fn new(format: PromptFormat, provider_config: ProviderConfig, model: &Model) -> Result<Self> {
        let virtual_tokens = provider_config.virtual_tokens();
        ensure!(virtual_tokens >= 0, "prompt_provider.num_virtual_tokens must not be negative");
        let format = format.with_leading_prompt_tokens(virtual_tokens as usize);
        // Checked before anything is allocated: `<P*99999999>` would otherwise ask for gigabytes.
        let (length, positions) = (format.prompt_length(), model.config().n_positions);
        ensure!(
            length as i64 <= positions,
            "the format has {length} prompt tokens, more than the model's {positions} positions (n_positions)"
        );
        let c = model.config();
        let shape = Shape { embedding_dim: c.n_embd, num_layers: c.n_layer, kv_dim: c.kv_dim };
        Self::build(format, provider_config, shape, model.device(), Some(model.token_embeddings()))
    }

    /// `format` holds a deep prompt's virtual tokens already; `embeddings` is `None` when the parameters are about
    /// to be loaded.
    fn build(
        format: PromptFormat,
        provider_config: ProviderConfig,
        shape: Shape,
        device: tch::Device,
        embeddings: Option<&Tensor>,
    ) -> Result<Self> {
        let virtual_tokens = provider_config.virtual_tokens();
        let leading = format.leading_prompt_tokens() as i64;
        ensure!(
            leading >= virtual_tokens,
            "the format {:?} starts with {leading} prompt tokens, fewer than the prefix's {virtual_tokens} virtual \
             tokens",
            format.template()
        );
        // Phrase tokens count among all prompt tokens; the provider numbers its own from 0.
        let shifted: std::collections::BTreeMap<usize, u32> =
            format.init_tokens().iter().map(|(&k, &v)| (k - virtual_tokens as usize, v)).collect();
        let vs = nn::VarStore::new(device);
        let init = ProviderInit {
            prompt_length: format.prompt_length() as i64 - virtual_tokens,
            embedding_dim: shape.embedding_dim,
            num_layers: shape.num_layers,
            kv_dim: shape.kv_dim,
            embeddings,
            init_tokens: &shifted,
        };
        let provider = crate::rng::unseeded(|| tch::no_grad(|| provider_config.build(vs.root(), &init)))?;
        Ok(Self { format, provider_config, vs, provider, shape, pretrained_model_name: None })
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
        self.shape.embedding_dim
    }

    /// A deep prompt's virtual tokens (0 for an input-layer prompt).
    pub fn virtual_tokens(&self) -> i64 {
        self.provider_config.virtual_tokens()
    }

    /// Number of trainable parameters.
    pub fn num_parameters(&self) -> i64 {
        let input_tokens = self.format.prompt_length() as i64 - self.virtual_tokens();
        let Shape { embedding_dim, num_layers, kv_dim } = self.shape;
        let count = self.provider_config.num_parameters(input_tokens, embedding_dim, num_layers, kv_dim);
        count.expect("a built prompt's parameters were allocated, so their count fits")
    }

    /// The provider's parameters by their PyTorch names, detached copies (what [`Prompt::set_state`] takes).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut state: Vec<(String, Tensor)> =
            self.vs.variables().into_iter().map(|(n, t)| (n, t.detach().copy())).collect();
        state.sort_by(|a, b| a.0.cmp(&b.0));
        state
    }

    /// Overwrites the provider's parameters from named tensors (PyTorch state-dict names, e.g. `weights` or
    /// `lstm.weight_ih_l0`); every parameter must be given with its exact shape and finite values, and nothing
    /// else.
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
            // A NaN or infinite number would flow into every logit and decode one token forever.
            ensure!(
                value.isfinite().all().int64_value(&[]) != 0,
                "parameter '{name}' holds NaN or infinite values ({} of {})",
                value.isfinite().logical_not().sum(tch::Kind::Int64).int64_value(&[]),
                value.numel()
            );
            tch::no_grad(|| var.shallow_clone().copy_(value));
        }
        if let Some(missing) = vars.keys().next() {
            anyhow::bail!("parameter '{missing}' of the {} provider was not given", self.provider_config.name());
        }
        Ok(())
    }

    /// The input-layer prompt embeddings `[L, d]` (a deep prompt's virtual tokens not included); compute once per
    /// step and share across the batch.
    pub fn embeddings(&self) -> Tensor {
        self.provider.forward()
    }

    /// A deep prompt's keys and values `[num_virtual_tokens, layers·2·d]` (see [`Provider::prefix`]).
    pub fn prefix(&self) -> Option<Tensor> {
        self.provider.prefix()
    }

    /// Adds the prompt token to `tokenizer` (a normal added token, like ruPrompts) and returns its id.
    pub fn add_token(&self, tokenizer: &mut Tokenizer) -> Result<i64> {
        Ok(i64::from(tokenizer.add_prompt_tokens(&[self.format.prompt_token()])?[0]))
    }

    /// Loads the prompt in `dir`, whichever kind it is: ours or ruPrompts' (`prompt.json`), or a PEFT adapter
    /// (`adapter_config.json`, read with its default format).
    pub fn load(dir: &std::path::Path, device: tch::Device) -> Result<Self> {
        if dir.join(PROMPT_FILE).is_file() || !dir.join(PEFT_CONFIG_FILE).is_file() {
            return Self::from_pretrained(dir, device);
        }
        Self::from_peft(dir, None, device)
    }

    /// Checks that this prompt fits `model` (see [`Shape::fits`]).
    pub fn fits(&self, model: &Model) -> Result<()> {
        let virtual_tokens = self.virtual_tokens();
        let reads_embeddings = self.format.prompt_length() as i64 > virtual_tokens;
        self.shape.fits(model.config(), reads_embeddings, virtual_tokens > 0)
    }

    /// This prompt's rows, computed now, ready to inject at `token_id`: a deep prompt's virtual tokens (zero
    /// embeddings, its keys and values) first, then the input-layer rows. At inference compute it once per
    /// request; in training once per step (gradients flow through it).
    pub fn injection(&self, token_id: i64) -> Injection<'_> {
        let embeddings = self.embeddings();
        let name = self.format.prompt_token();
        let shape = self.shape;
        let Some(prefix) = self.prefix() else { return Injection { name, token_id, shape, embeddings, deep: None } };
        let (n, l) = (prefix.size()[0], embeddings.size()[0]);
        let options = (embeddings.kind(), embeddings.device());
        let width = prefix.size()[1];
        let embeddings = Tensor::cat(&[Tensor::zeros([n, self.shape.embedding_dim], options), embeddings], 0);
        let values = Tensor::cat(&[prefix, Tensor::zeros([l, width], options)], 0);
        let virtual_ = Tensor::arange(n + l, (tch::Kind::Int64, options.1)).lt(n);
        Injection { name, token_id, shape, embeddings, deep: Some(DeepRows { values, virtual_ }) }
    }

    /// What the model reads for `ids` with this prompt injected at `token_id` (see [`inject`]).
    pub fn embed(&self, model: &Model, ids: &Tensor, token_id: i64) -> Result<Injected> {
        inject(model, ids, &[self.injection(token_id)])
    }
}
