//! PEFT prompt-learning adapters (`adapter_config.json` + `adapter_model.safetensors` holding
//! `prompt_embeddings`): prompt tuning and P-tuning (`[N, d]`, input embeddings) and prefix tuning
//! (`[N, layers·2·d]`, keys and values, any projection baked in). PEFT prepends its virtual tokens to the input,
//! so only formats whose prompt tokens all come first (`<P*N>{text}`) can be exported, and an import becomes such
//! a format; a deep prompt exports when the format has no input-layer prompt tokens of its own.

use std::path::Path;

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::Deserialize;
use tch::{Device, Tensor};

use super::io::read_named;
use super::Prompt;
use crate::format::{PromptFormat, PROMPT_TOKEN};
use crate::fs::write_atomic;
use crate::provider::ProviderConfig;

pub const PEFT_CONFIG_FILE: &str = "adapter_config.json";
pub const PEFT_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The tensor name PEFT saves prompt-learning adapters under.
const PEFT_KEY: &str = "prompt_embeddings";

/// The fields of `adapter_config.json` an import needs; PEFT writes many more.
#[derive(Debug, Deserialize)]
struct AdapterConfig {
    peft_type: String,
    #[serde(default)]
    num_virtual_tokens: Option<i64>,
    #[serde(default)]
    num_transformer_submodules: Option<i64>,
    #[serde(default)]
    num_layers: Option<i64>,
    #[serde(default)]
    token_dim: Option<i64>,
    #[serde(default)]
    num_attention_heads: Option<i64>,
    #[serde(default)]
    base_model_name_or_path: Option<String>,
}

impl Prompt {
    /// Writes this prompt as a PEFT adapter for a causal LM, the provider's output baked: `PREFIX_TUNING` for a
    /// deep prompt, `PROMPT_TUNING` otherwise.
    pub fn save_peft(&self, dir: &Path) -> Result<()> {
        if self.virtual_tokens() > 0 {
            return self.save_peft_prefix(dir);
        }
        ensure!(
            self.format.is_prefix(),
            "the format {:?} has prompt tokens after other text; a PEFT adapter can only hold a prompt that \
             comes first, as in <P*N>{{text}}",
            self.format.template()
        );
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let weights = tch::no_grad(|| self.embeddings()).detach().to_device(Device::Cpu).contiguous();
        write_atomic(&dir.join(PEFT_WEIGHTS_FILE), |p| Ok(Tensor::write_safetensors(&[(PEFT_KEY, &weights)], p)?))?;
        // PEFT fills num_layers and num_attention_heads from the base model when they are null.
        let config = serde_json::json!({
            "peft_type": "PROMPT_TUNING",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": self.pretrained_model_name,
            "revision": null,
            "inference_mode": true,
            "num_virtual_tokens": self.format.prompt_length(),
            "token_dim": self.shape.embedding_dim,
            "num_transformer_submodules": 1,
            "num_attention_heads": null,
            "num_layers": null,
            "prompt_tuning_init": "RANDOM",
            "prompt_tuning_init_text": null,
            "tokenizer_name_or_path": null,
            "tokenizer_kwargs": null,
            "auto_mapping": null,
        });
        write_atomic(&dir.join(PEFT_CONFIG_FILE), |p| Ok(std::fs::write(p, serde_json::to_string_pretty(&config)?)?))
    }

    fn save_peft_prefix(&self, dir: &Path) -> Result<()> {
        let own = self.format.prompt_length() as i64 - self.virtual_tokens();
        ensure!(
            own == 0,
            "the format {:?} has {own} prompt tokens of its own besides the prefix; a PEFT PREFIX_TUNING adapter \
             holds only keys and values",
            self.format.template()
        );
        let prefix = self.prefix().expect("a deep prompt has keys and values");
        let weights = tch::no_grad(|| prefix).detach().to_device(Device::Cpu).contiguous();
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        write_atomic(&dir.join(PEFT_WEIGHTS_FILE), |p| Ok(Tensor::write_safetensors(&[(PEFT_KEY, &weights)], p)?))?;
        let (projection, hidden) = match self.provider_config {
            ProviderConfig::Prefix { projection: Some(p), .. } => (true, p.hidden_dim.unwrap_or(self.shape.kv_dim)),
            _ => (false, self.shape.kv_dim),
        };
        // PEFT fills num_attention_heads from the base model when it is null.
        let config = serde_json::json!({
            "peft_type": "PREFIX_TUNING",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": self.pretrained_model_name,
            "revision": null,
            "inference_mode": true,
            "num_virtual_tokens": self.virtual_tokens(),
            "token_dim": self.shape.kv_dim,
            "num_transformer_submodules": 1,
            "num_attention_heads": null,
            "num_layers": self.shape.num_layers,
            "encoder_hidden_size": hidden,
            "prefix_projection": projection,
            "init_weights": null,
            "modules_to_save": null,
            "auto_mapping": null,
        });
        write_atomic(&dir.join(PEFT_CONFIG_FILE), |p| Ok(std::fs::write(p, serde_json::to_string_pretty(&config)?)?))
    }

    /// Reads a PEFT adapter of a causal LM: `PROMPT_TUNING` or `P_TUNING` as a tensor prompt, `PREFIX_TUNING` as
    /// a deep prompt (its projection, if it had one, baked into the keys and values as PEFT saves them). `format`
    /// says where the text goes (default `<P*N>{text}`, or `{text}` for a prefix); its prompt tokens must come
    /// first, N of them (none for a prefix).
    pub fn from_peft(dir: &Path, format: Option<PromptFormat>, device: Device) -> Result<Self> {
        let config_path = dir.join(PEFT_CONFIG_FILE);
        let text =
            std::fs::read_to_string(&config_path).with_context(|| format!("cannot read {}", config_path.display()))?;
        let config: AdapterConfig = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a PEFT adapter config", config_path.display()))?;
        ensure!(
            matches!(config.peft_type.as_str(), "PROMPT_TUNING" | "P_TUNING" | "PREFIX_TUNING"),
            "{}: a {} adapter holds no soft prompt (expected PROMPT_TUNING, P_TUNING or PREFIX_TUNING)",
            config_path.display(),
            config.peft_type
        );
        ensure!(
            config.num_transformer_submodules.unwrap_or(1) == 1,
            "{}: num_transformer_submodules is {} (an encoder-decoder adapter); only causal LMs are supported",
            config_path.display(),
            config.num_transformer_submodules.unwrap_or(1)
        );
        let n = config
            .num_virtual_tokens
            .ok_or_else(|| anyhow!("{}: num_virtual_tokens is missing", config_path.display()))?;
        let weights_path = dir.join(PEFT_WEIGHTS_FILE);
        let weights = read_named(&weights_path, PEFT_KEY)?;
        let [rows, dim] = weights.size()[..] else {
            bail!("{}: '{PEFT_KEY}' has shape {:?}, expected [tokens, dim]", weights_path.display(), weights.size())
        };
        ensure!(rows == n, "{}: '{PEFT_KEY}' has {rows} rows but num_virtual_tokens is {n}", weights_path.display());
        if let Some(heads) = config.num_attention_heads {
            let width = config.token_dim.unwrap_or(dim);
            ensure!(
                heads > 0 && width % heads == 0,
                "{}: num_attention_heads {heads} does not divide token_dim {width} into whole heads",
                config_path.display()
            );
        }
        if config.peft_type == "PREFIX_TUNING" {
            return Self::from_peft_prefix(&config, &config_path, weights, format, device);
        }
        let format = match format {
            Some(format) => format,
            None => {
                let compiled = format!("{}{{text}}", PROMPT_TOKEN.repeat(n as usize));
                PromptFormat::from_compiled(&format!("<P*{n}>{{text}}"), &compiled)?
            }
        };
        if let Some(stated) = config.token_dim {
            ensure!(
                stated == dim,
                "{}: token_dim is {stated} but '{PEFT_KEY}' in {} has rows of {dim}",
                config_path.display(),
                weights_path.display()
            );
        }
        ensure!(
            format.is_prefix() && format.prompt_length() as i64 == n,
            "the format {:?} must start with the adapter's {n} prompt tokens and have no others (it has {})",
            format.template(),
            format.prompt_length()
        );
        let shape = super::Shape { embedding_dim: dim, num_layers: 0, kv_dim: dim };
        let mut prompt = Prompt::build(format, ProviderConfig::default(), shape, device, None)?;
        prompt.pretrained_model_name = config.base_model_name_or_path;
        prompt
            .set_state(&[("weights".to_string(), weights)])
            .with_context(|| format!("cannot load {}", weights_path.display()))?;
        Ok(prompt)
    }

    fn from_peft_prefix(
        config: &AdapterConfig,
        config_path: &Path,
        weights: Tensor,
        format: Option<PromptFormat>,
        device: Device,
    ) -> Result<Self> {
        let (n, width) = (weights.size()[0], weights.size()[1]);
        let field = |v: Option<i64>, name: &str| {
            v.filter(|&x| x > 0).ok_or_else(|| anyhow!("{}: {name} is missing", config_path.display()))
        };
        let (layers, dim) = (field(config.num_layers, "num_layers")?, field(config.token_dim, "token_dim")?);
        ensure!(
            width == 2 * layers * dim,
            "{}: '{PEFT_KEY}' is [{n}, {width}] but num_layers {layers} and token_dim {dim} make rows of \
             2 · {layers} · {dim} = {}",
            config_path.display(),
            2 * layers * dim
        );
        let format = match format {
            Some(format) => format,
            None => PromptFormat::from_compiled("{text}", "{text}")?,
        };
        ensure!(
            format.prompt_length() == 0,
            "the format {:?} has prompt tokens; a PEFT PREFIX_TUNING adapter gives none (use {{text}}-like formats)",
            format.template()
        );
        let provider = ProviderConfig::Prefix { num_virtual_tokens: n, projection: None, init: Default::default() };
        let format = format.with_leading_prompt_tokens(n as usize);
        // PEFT's token_dim is the key width; a prefix has no input rows, so the embedding size is not needed.
        let shape = super::Shape { embedding_dim: dim, num_layers: layers, kv_dim: dim };
        let mut prompt = Prompt::build(format, provider, shape, device, None)?;
        prompt.pretrained_model_name = config.base_model_name_or_path.clone();
        prompt
            .set_state(&[("embedding.weight".to_string(), weights)])
            .with_context(|| format!("cannot load {}", config_path.with_file_name(PEFT_WEIGHTS_FILE).display()))?;
        Ok(prompt)
    }
}
