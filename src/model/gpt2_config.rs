//! `config.json` of a Hugging Face GPT-2-architecture checkpoint (GPT-2, ruGPT-3 small/medium/large, mGPT).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The fields of a GPT-2 `config.json` that the forward pass depends on. Unknown fields are ignored, since
/// Hugging Face adds new ones with every release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Config {
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: i64,
    /// Learned positions (Hugging Face's default 1024 when absent). Old configs also carry `n_ctx`, which
    /// transformers ignores; so do we (an alias would make files with both keys fail to parse).
    #[serde(default = "default_positions")]
    pub n_positions: i64,
    pub n_embd: i64,
    pub n_layer: i64,
    pub n_head: i64,
    /// Width of the MLP; `null` means `4 * n_embd`.
    #[serde(default)]
    pub n_inner: Option<i64>,
    #[serde(default = "default_activation")]
    pub activation_function: String,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_true")]
    pub scale_attn_weights: bool,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    #[serde(default)]
    pub reorder_and_upcast_attn: bool,
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub bos_token_id: Option<i64>,
    #[serde(default)]
    pub eos_token_id: Option<i64>,
    #[serde(default)]
    pub pad_token_id: Option<i64>,
}

fn default_positions() -> i64 {
    1024
}

/// The MLP non-linearity named by `activation_function`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu_new` / `gelu_pytorch_tanh`: GELU with the tanh approximation (GPT-2, ruGPT-3, mGPT).
    GeluTanh,
    /// `gelu`: exact erf GELU.
    Gelu,
    Relu,
}

impl Activation {
    pub fn apply(self, x: &tch::Tensor) -> tch::Tensor {
        match self {
            Self::GeluTanh => x.gelu("tanh"),
            Self::Gelu => x.gelu("none"),
            Self::Relu => x.relu(),
        }
    }
}

fn default_model_type() -> String {
    "gpt2".into()
}
fn default_activation() -> String {
    "gelu_new".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}

impl Gpt2Config {
    /// Reads and checks `config.json`; errors name the file and the offending field.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let config: Self =
            serde_json::from_str(&text).with_context(|| format!("{} is not a valid GPT-2 config", path.display()))?;
        config.validate().with_context(|| format!("unsupported model in {}", path.display()))?;
        Ok(config)
    }

    /// Refuses what the model cannot be built from: another architecture, an unknown activation, sizes that are
    /// not positive or heads that do not divide the width. Every constructor of the GPT-2 model calls it.
    pub fn validate(&self) -> Result<()> {
        if self.model_type != "gpt2" {
            bail!(
                "architecture model_type='{}': ruprompts runs GPT-2-architecture models (model_type 'gpt2': \
                 GPT-2, ruGPT-3, mGPT)",
                self.model_type
            );
        }
        self.activation()?;
        if self.reorder_and_upcast_attn {
            bail!("reorder_and_upcast_attn=true is not supported");
        }
        for (name, value) in [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
        ] {
            if value <= 0 {
                bail!("{name}={value} must be positive");
            }
        }
        if self.n_embd % self.n_head != 0 {
            bail!("n_embd={} is not divisible by n_head={}", self.n_embd, self.n_head);
        }
        Ok(())
    }

    pub fn activation(&self) -> Result<Activation> {
        match self.activation_function.as_str() {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            "gelu" => Ok(Activation::Gelu),
            "relu" => Ok(Activation::Relu),
            other => {
                bail!("activation_function='{other}' is not supported (gelu_new, gelu, relu are)")
            }
        }
    }

    pub fn inner_dim(&self) -> i64 {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    pub fn head_dim(&self) -> i64 {
        self.n_embd / self.n_head
    }

    /// Shapes of every weight the model needs, by name without the `transformer.` prefix, in Conv1D layout
    /// (`[in, out]`). `lm_head.weight` is listed only for untied checkpoints.
    pub fn expected_shapes(&self) -> Vec<(String, Vec<i64>)> {
        let (d, inner) = (self.n_embd, self.inner_dim());
        let mut shapes = vec![
            ("wte.weight".to_string(), vec![self.vocab_size, d]),
            ("wpe.weight".to_string(), vec![self.n_positions, d]),
        ];
        for i in 0..self.n_layer {
            let p = format!("h.{i}");
            shapes.extend([
                (format!("{p}.ln_1.weight"), vec![d]),
                (format!("{p}.ln_1.bias"), vec![d]),
                (format!("{p}.attn.c_attn.weight"), vec![d, 3 * d]),
                (format!("{p}.attn.c_attn.bias"), vec![3 * d]),
                (format!("{p}.attn.c_proj.weight"), vec![d, d]),
                (format!("{p}.attn.c_proj.bias"), vec![d]),
                (format!("{p}.ln_2.weight"), vec![d]),
                (format!("{p}.ln_2.bias"), vec![d]),
                (format!("{p}.mlp.c_fc.weight"), vec![d, inner]),
                (format!("{p}.mlp.c_fc.bias"), vec![inner]),
                (format!("{p}.mlp.c_proj.weight"), vec![inner, d]),
                (format!("{p}.mlp.c_proj.bias"), vec![d]),
            ]);
        }
        shapes.extend([("ln_f.weight".to_string(), vec![d]), ("ln_f.bias".to_string(), vec![d])]);
        if !self.tie_word_embeddings {
            shapes.push(("lm_head.weight".to_string(), vec![self.vocab_size, d]));
        }
        shapes
    }

    /// The weights' names and shapes, for loading.
    pub fn layout(&self) -> super::weights::Layout {
        super::weights::Layout {
            shapes: self.expected_shapes(),
            strip: "transformer.",
            tied: self.tie_word_embeddings,
            sizes: format!(
                "n_embd={}, n_layer={}, vocab_size={}, n_positions={}",
                self.n_embd, self.n_layer, self.vocab_size, self.n_positions
            ),
            layers: format!("n_layer={}", self.n_layer),
        }
    }

    /// Number of parameters (tied embeddings counted once).
    pub fn num_parameters(&self) -> i64 {
        self.expected_shapes().iter().map(|(_, s)| s.iter().product::<i64>()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Gpt2Config> {
        let c: Gpt2Config = serde_json::from_str(json)?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn gpt2_small_parameter_count_matches_hugging_face() {
        let c = parse(r#"{"vocab_size":50257,"n_positions":1024,"n_embd":768,"n_layer":12,"n_head":12}"#).unwrap();
        assert_eq!(c.num_parameters(), 124_439_808);
        assert_eq!(c.activation().unwrap(), Activation::GeluTanh);
    }

    /// The tiny fixture model's activations are too small to tell GELU variants apart, so pin the formulas
    /// here: HF's `NewGELUActivation` is `0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3)))`.
    #[test]
    fn activations_follow_hugging_face_formulas() {
        let xs = [-3.0f64, -1.5, -0.2, 0.0, 0.7, 2.0, 4.0];
        let t = tch::Tensor::from_slice(&xs);
        let out = |a: Activation| Vec::<f64>::try_from(a.apply(&t)).unwrap();
        let (tanh, erf, relu) = (out(Activation::GeluTanh), out(Activation::Gelu), out(Activation::Relu));
        for (i, &x) in xs.iter().enumerate() {
            let new_gelu = 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh());
            assert!((tanh[i] - new_gelu).abs() < 1e-12, "gelu_new({x})");
            assert_eq!(relu[i], x.max(0.0));
        }
        // erf GELU differs from the tanh form by ~1e-4 at x=2: 2 * Phi(2) = 1.9544997361.
        assert!((erf[5] - 1.954_499_736_103_642).abs() < 1e-9);
        assert!((tanh[5] - erf[5]).abs() > 5e-5);
    }

    #[test]
    fn rejects_other_architectures_and_bad_shapes() {
        let err = parse(r#"{"model_type":"llama","vocab_size":5,"n_positions":4,"n_embd":8,"n_layer":1,"n_head":2}"#)
            .unwrap_err();
        assert!(err.to_string().contains("model_type='llama'"), "{err}");
        let err = parse(r#"{"vocab_size":5,"n_positions":4,"n_embd":10,"n_layer":1,"n_head":3}"#).unwrap_err();
        assert!(err.to_string().contains("not divisible"), "{err}");
        let err = parse(
            r#"{"vocab_size":5,"n_positions":4,"n_embd":8,"n_layer":1,"n_head":2,"activation_function":"swish"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("swish"), "{err}");
    }
}
