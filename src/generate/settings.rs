//! How to decode: the knobs of Hugging Face's `generate`, with its defaults except where noted.

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationConfig {
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    /// Sample from the (processed) distribution instead of taking the most likely token.
    #[serde(default)]
    pub do_sample: bool,
    #[serde(default = "one")]
    pub temperature: f64,
    /// Keep only the k most likely tokens when sampling.
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches p when sampling (nucleus sampling).
    #[serde(default)]
    pub top_p: Option<f64>,
    /// > 1 discourages tokens already in the row (CTRL's rule, as in transformers).
    #[serde(default = "one")]
    pub repetition_penalty: f64,
    /// Stop a row after this token (ruPrompts' pipelines use 0, ruGPT-3's `<pad>`; the tokenizer's eos otherwise).
    #[serde(default)]
    pub eos_token_id: Option<i64>,
    /// Outputs per input.
    #[serde(default = "one_usize")]
    pub num_return_sequences: usize,
    /// Seed of the sampler, for reproducible samples.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Feed one new token per step with the KV cache (else re-read the whole sequence every step).
    #[serde(default = "yes")]
    pub use_cache: bool,
}

fn default_max_new_tokens() -> usize {
    32
}
fn one() -> f64 {
    1.0
}
fn one_usize() -> usize {
    1
}
fn yes() -> bool {
    true
}

impl GenerationConfig {
    /// Refuses settings that decode nothing or make the sampler's distribution meaningless, naming the setting
    /// (and its command-line flag).
    pub fn validate(&self) -> Result<()> {
        ensure!(self.max_new_tokens >= 1, "max_new_tokens (--max-new-tokens) must be at least 1");
        ensure!(self.num_return_sequences >= 1, "num_return_sequences (--num-return-sequences) must be at least 1");
        let t = self.temperature;
        ensure!(t.is_finite() && t > 0.0, "temperature (--temperature) must be a positive number, not {t}");
        if let Some(k) = self.top_k {
            ensure!(k >= 1, "top_k (--top-k) must be at least 1");
        }
        if let Some(p) = self.top_p {
            ensure!(p > 0.0 && p <= 1.0, "top_p (--top-p) must be in (0, 1], not {p}");
        }
        let r = self.repetition_penalty;
        ensure!(
            r.is_finite() && r > 0.0,
            "repetition_penalty (--repetition-penalty) must be a positive number (1 = none), not {r}"
        );
        Ok(())
    }
}

impl Default for GenerationConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}
