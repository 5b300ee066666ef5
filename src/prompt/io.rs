//! Saving and loading prompts in ruPrompts' layout: `prompt.json` (format + config) and the prompt tensor,
//! as `prompt_provider.safetensors` and as ruPrompts' own `prompt_provider.bin`. We also keep the provider's
//! full parameters (`provider_state.safetensors`) so BiLSTM and MLP prompts can resume training.

use std::path::Path;

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::{torch_pickle, Prompt};
use crate::format::PromptFormat;
use crate::fs::write_atomic;
use crate::provider::ProviderConfig;

pub const PROMPT_FILE: &str = "prompt.json";
/// The prompt embeddings `[L, d]` under the key `weights`.
pub const WEIGHTS_FILE: &str = "prompt_provider.safetensors";
/// The same tensor as `torch.save` writes it: what Python ruPrompts reads.
pub const TORCH_FILE: &str = "prompt_provider.bin";
/// The folder inside that zip: `torch.save` names it after the file.
const TORCH_ARCHIVE: &str = "prompt_provider";
/// Every provider parameter by its PyTorch name, for resuming training.
pub const STATE_FILE: &str = "provider_state.safetensors";

/// The largest width or layer count a prompt file may give (real models are far below it).
const MAX_SIZE: i64 = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
struct PromptJson {
    format: FormatJson,
    #[serde(default)]
    config: ConfigJson,
    /// Ours only (ruPrompts ignores it): which provider `provider_state.safetensors` belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    provider: Option<ProviderConfig>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FormatJson {
    template: String,
    compiled_template: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ConfigJson {
    #[serde(default)]
    embedding_dim: Option<i64>,
    #[serde(default)]
    prompt_length: Option<i64>,
    /// Ours only, for deep prompts: the backbone's transformer layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    num_layers: Option<i64>,
    /// Ours only, for deep prompts on models with grouped-query attention: the key width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kv_dim: Option<i64>,
    #[serde(default)]
    pretrained_model_name: Option<String>,
    #[serde(default)]
    is_safe: bool,
}

impl Prompt {
    /// Saves into `dir` (created if needed): weights first, `prompt.json` last, each file atomically. A deep
    /// prompt's file of weights holds its keys and values (`prefix`) and its input-layer rows (`weights`, when the
    /// format has prompt tokens), and no `prompt_provider.bin`: ruPrompts has no deep prompts.
    pub fn save_pretrained(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let cpu = |t: Tensor| t.detach().to_device(Device::Cpu).contiguous();
        let weights = cpu(tch::no_grad(|| self.embeddings()));
        match tch::no_grad(|| self.prefix()).map(cpu) {
            None => {
                write_atomic(&dir.join(WEIGHTS_FILE), |p| Ok(Tensor::write_safetensors(&[("weights", &weights)], p)?))?;
                write_atomic(&dir.join(TORCH_FILE), |p| {
                    torch_pickle::write_tensor(&weights, TORCH_ARCHIVE, std::fs::File::create(p)?)
                })?;
            }
            Some(prefix) => {
                let mut named = vec![("prefix", &prefix)];
                if weights.size()[0] > 0 {
                    named.push(("weights", &weights));
                }
                write_atomic(&dir.join(WEIGHTS_FILE), |p| Ok(Tensor::write_safetensors(&named, p)?))?;
            }
        }
        let state: Vec<(String, Tensor)> = self.state().into_iter().map(|(n, t)| (n, cpu(t))).collect();
        let named: Vec<(&str, &Tensor)> = state.iter().map(|(n, t)| (n.as_str(), t)).collect();
        write_atomic(&dir.join(STATE_FILE), |p| Ok(Tensor::write_safetensors(&named, p)?))?;
        let json = PromptJson {
            format: FormatJson {
                template: self.format.template().to_string(),
                compiled_template: self.format.compiled_template(),
            },
            config: ConfigJson {
                embedding_dim: Some(self.shape.embedding_dim),
                prompt_length: Some(self.format.prompt_length() as i64),
                num_layers: (self.virtual_tokens() > 0).then_some(self.shape.num_layers),
                kv_dim: (self.virtual_tokens() > 0 && self.shape.kv_dim != self.shape.embedding_dim)
                    .then_some(self.shape.kv_dim),
                pretrained_model_name: self.pretrained_model_name.clone(),
                is_safe: false,
            },
            provider: Some(self.provider_config.clone()),
        };
        write_atomic(&dir.join(PROMPT_FILE), |p| Ok(std::fs::write(p, serde_json::to_string_pretty(&json)?)?))
    }

    /// Loads a prompt saved by [`Prompt::save_pretrained`] or by Python ruPrompts, onto `device`. With our
    /// provider state the full provider comes back (trainable as before); otherwise the saved tensor becomes
    /// a tensor provider, as in ruPrompts.
    /// `dir` is a local folder (the resolve module at the CLI edge turns a Hub id into one).
    pub fn from_pretrained(dir: &Path, device: Device) -> Result<Self> {
        let json_path = dir.join(PROMPT_FILE);
        let text =
            std::fs::read_to_string(&json_path).with_context(|| format!("cannot read {}", json_path.display()))?;
        let json: PromptJson = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid prompt file", json_path.display()))?;
        let format = PromptFormat::from_compiled(&json.format.template, &json.format.compiled_template)
            .with_context(|| format!("{}: bad format", json_path.display()))?;
        let length = format.prompt_length() as i64;
        if let Some(stated) = json.config.prompt_length {
            ensure!(
                stated == length,
                "{}: prompt_length {stated} but the compiled template has {length} prompt tokens",
                json_path.display()
            );
        }
        let state_path = dir.join(STATE_FILE);
        let (provider, state) = match json.provider {
            Some(ProviderConfig::Prefix { .. }) if !state_path.is_file() => {
                bail!("{}: a prefix prompt needs its {STATE_FILE}, which is missing", dir.display())
            }
            Some(provider) if state_path.is_file() => {
                let state = Tensor::read_safetensors(&state_path)
                    .with_context(|| format!("cannot read {}", state_path.display()))?;
                (provider, state)
            }
            _ => (ProviderConfig::default(), vec![("weights".to_string(), read_weights(dir)?)]),
        };
        let weights_dim =
            |state: &[(String, Tensor)]| state.iter().find(|(n, _)| n == "weights").map(|(_, t)| t.size()[1]);
        let embedding_dim = json
            .config
            .embedding_dim
            .or_else(|| weights_dim(&state))
            .ok_or_else(|| anyhow!("{}: config.embedding_dim is missing", json_path.display()))?;
        let num_layers = match provider.virtual_tokens() {
            0 => 0,
            _ => json
                .config
                .num_layers
                .ok_or_else(|| anyhow!("{}: config.num_layers is missing", json_path.display()))?,
        };
        let kv_dim = json.config.kv_dim.unwrap_or(embedding_dim);
        // Sizes the provider allocates from: a corrupt file is an error here, not a failed allocation. (A prompt
        // without virtual tokens has no layers of its own: 0.)
        let deep = provider.virtual_tokens() > 0;
        for (key, value, least) in
            [("embedding_dim", embedding_dim, 1), ("kv_dim", kv_dim, 1), ("num_layers", num_layers, i64::from(deep))]
        {
            ensure!(
                (least..=MAX_SIZE).contains(&value),
                "{}: config.{key} is {value}; expected {least} to {MAX_SIZE}",
                json_path.display()
            );
        }
        let shape = super::Shape { embedding_dim, num_layers, kv_dim };
        let mut prompt = Prompt::build(format, provider, shape, device, None)?;
        prompt.pretrained_model_name = json.config.pretrained_model_name;
        prompt.set_state(&state).with_context(|| format!("cannot load the prompt in {}", dir.display()))?;
        Ok(prompt)
    }
}

/// The tensor called `name` in the safetensors file `path`; its absence is an error naming both.
pub(super) fn read_named(path: &Path, name: &str) -> Result<Tensor> {
    Tensor::read_safetensors(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t)
        .ok_or_else(|| anyhow!("{} has no tensor '{name}'", path.display()))
}

/// The prompt tensor from `prompt_provider.safetensors`, else from ruPrompts' `prompt_provider.bin`.
fn read_weights(dir: &Path) -> Result<Tensor> {
    let st = dir.join(WEIGHTS_FILE);
    if st.is_file() {
        return read_named(&st, "weights");
    }
    let bin = dir.join(TORCH_FILE);
    if bin.is_file() {
        return torch_pickle::read_tensor(&bin);
    }
    bail!("no prompt weights in {}: expected {WEIGHTS_FILE} or {TORCH_FILE}", dir.display())
}
