//! `config.json` of a Llama-family checkpoint: `LlamaForCausalLM` (Llama 2/3/3.x, YandexGPT-5-Lite),
//! `MistralForCausalLM` and `Qwen2ForCausalLM`, with the rope scalings they ship.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;

/// Which family: they differ in biases and where a sliding window applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Llama,
    Mistral,
    Qwen2,
}

/// `rope_scaling` (`rope_type`, or the older `type`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RopeScaling {
    #[serde(alias = "type")]
    pub rope_type: String,
    #[serde(default)]
    pub factor: Option<f64>,
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    #[serde(default)]
    pub original_max_position_embeddings: Option<i64>,
}

/// The fields the forward pass depends on; unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LlamaConfig {
    pub model_type: Family,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    /// Key/value heads (grouped-query attention); default: as many as query heads.
    #[serde(default)]
    pub num_key_value_heads: Option<i64>,
    #[serde(default)]
    pub head_dim: Option<i64>,
    pub max_position_embeddings: i64,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Llama: biases on q/k/v/o (Qwen2 always has them on q/k/v).
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub sliding_window: Option<i64>,
    /// Qwen2: whether `sliding_window` applies at all, and from which layer on.
    #[serde(default)]
    pub use_sliding_window: bool,
    #[serde(default)]
    pub max_window_layers: Option<i64>,
    /// Qwen2's per-layer kinds (`full_attention`, `sliding_attention`), when given.
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10000.0
}
fn default_act() -> String {
    "silu".into()
}

/// How rotary frequencies are scaled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rope {
    Default,
    /// Positions divided by `factor`.
    Linear {
        factor: f64,
    },
    /// NTK-aware: the base grows with the sequence once it passes `max_position_embeddings`.
    Dynamic {
        factor: f64,
    },
    /// Llama 3.1's smoothed per-frequency scaling.
    Llama3 {
        factor: f64,
        low: f64,
        high: f64,
        original: i64,
    },
}

impl LlamaConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let config: Self =
            serde_json::from_str(&text).with_context(|| format!("{} is not a Llama-family config", path.display()))?;
        config.validate().with_context(|| path.display().to_string())?;
        Ok(config)
    }

    pub fn kv_heads(&self) -> i64 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> i64 {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// The rotary scaling, or an error naming an unsupported one.
    pub fn rope(&self) -> Result<Rope> {
        let Some(s) = &self.rope_scaling else { return Ok(Rope::Default) };
        let factor = || s.factor.with_context(|| format!("rope_scaling {:?} needs a factor", s.rope_type));
        Ok(match s.rope_type.as_str() {
            "default" => Rope::Default,
            "linear" => Rope::Linear { factor: factor()? },
            "dynamic" => Rope::Dynamic { factor: factor()? },
            "llama3" => Rope::Llama3 {
                factor: factor()?,
                low: s.low_freq_factor.context("rope_scaling llama3 needs low_freq_factor")?,
                high: s.high_freq_factor.context("rope_scaling llama3 needs high_freq_factor")?,
                original: s
                    .original_max_position_embeddings
                    .context("rope_scaling llama3 needs original_max_position_embeddings")?,
            },
            other => bail!("rope_scaling type '{other}' is not supported (default, linear, dynamic and llama3 are)"),
        })
    }

    /// The sliding window of layer `i`, if it has one.
    pub fn window(&self, i: i64) -> Option<i64> {
        match self.model_type {
            Family::Llama => None,
            Family::Mistral => self.sliding_window,
            Family::Qwen2 => {
                let sliding = match &self.layer_types {
                    Some(types) => types.get(i as usize).is_some_and(|t| t == "sliding_attention"),
                    None => self.use_sliding_window && i >= self.max_window_layers.unwrap_or(0),
                };
                if sliding && self.use_sliding_window {
                    self.sliding_window
                } else {
                    None
                }
            }
        }
    }

    /// Biases on q/k/v, and on o.
    pub fn attention_biases(&self) -> (bool, bool) {
        match self.model_type {
            Family::Qwen2 => (true, false),
            Family::Mistral => (false, false),
            Family::Llama => (self.attention_bias, self.attention_bias),
        }
    }

    pub fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
            ("head_dim", self.head_dim()),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            ensure!(value > 0, "{name}={value} must be positive");
        }
        ensure!(
            self.num_attention_heads % self.kv_heads() == 0,
            "num_attention_heads={} is not a multiple of num_key_value_heads={}",
            self.num_attention_heads,
            self.kv_heads()
        );
        ensure!(self.head_dim() % 2 == 0, "head_dim={} must be even for rotary embeddings", self.head_dim());
        ensure!(self.hidden_act == "silu", "hidden_act='{}' is not supported (silu is)", self.hidden_act);
        ensure!(self.sliding_window.is_none_or(|w| w > 0), "sliding_window must be positive");
        self.rope()?;
        Ok(())
    }

    /// The weights' names and shapes, for loading.
    pub fn layout(&self) -> super::weights::Layout {
        let (d, hd, inner) = (self.hidden_size, self.head_dim(), self.intermediate_size);
        let (q, kv) = (self.num_attention_heads * hd, self.kv_heads() * hd);
        let (qkv_bias, o_bias) = self.attention_biases();
        let mut shapes = vec![("model.embed_tokens.weight".to_string(), vec![self.vocab_size, d])];
        for i in 0..self.num_hidden_layers {
            let p = format!("model.layers.{i}");
            shapes.extend([
                (format!("{p}.input_layernorm.weight"), vec![d]),
                (format!("{p}.post_attention_layernorm.weight"), vec![d]),
                (format!("{p}.self_attn.q_proj.weight"), vec![q, d]),
                (format!("{p}.self_attn.k_proj.weight"), vec![kv, d]),
                (format!("{p}.self_attn.v_proj.weight"), vec![kv, d]),
                (format!("{p}.self_attn.o_proj.weight"), vec![d, q]),
                (format!("{p}.mlp.gate_proj.weight"), vec![inner, d]),
                (format!("{p}.mlp.up_proj.weight"), vec![inner, d]),
                (format!("{p}.mlp.down_proj.weight"), vec![d, inner]),
            ]);
            if qkv_bias {
                shapes.extend([
                    (format!("{p}.self_attn.q_proj.bias"), vec![q]),
                    (format!("{p}.self_attn.k_proj.bias"), vec![kv]),
                    (format!("{p}.self_attn.v_proj.bias"), vec![kv]),
                ]);
            }
            if o_bias {
                shapes.push((format!("{p}.self_attn.o_proj.bias"), vec![d]));
            }
            if self.mlp_bias {
                shapes.extend([
                    (format!("{p}.mlp.gate_proj.bias"), vec![inner]),
                    (format!("{p}.mlp.up_proj.bias"), vec![inner]),
                    (format!("{p}.mlp.down_proj.bias"), vec![d]),
                ]);
            }
        }
        shapes.push(("model.norm.weight".to_string(), vec![d]));
        if !self.tie_word_embeddings {
            shapes.push(("lm_head.weight".to_string(), vec![self.vocab_size, d]));
        }
        super::weights::Layout {
            shapes,
            strip: "",
            tied: self.tie_word_embeddings,
            sizes: format!(
                "hidden_size={d}, num_hidden_layers={}, num_attention_heads={}, num_key_value_heads={}, \
                 vocab_size={}",
                self.num_hidden_layers,
                self.num_attention_heads,
                self.kv_heads(),
                self.vocab_size
            ),
            layers: format!("num_hidden_layers={}", self.num_hidden_layers),
        }
    }
}
