//! How to decode: the knobs of Hugging Face's `generate`, with its defaults except where noted.

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

impl Default for GenerationConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}
