//! The decoding flags `generate` and `eval` share: transformers' `generate` knobs, each optional so that what is not
//! given keeps the default (or a published prompt's recipe).

use clap::Args;

use crate::generate::{EarlyStopping, GenerationConfig};

/// The decoding knobs, each named as transformers' `generate` names it. Unset ones keep the published prompt's
/// recipe, else the defaults shown.
#[derive(Debug, Clone, Args)]
pub struct DecodingArgs {
    /// New tokens at most [default: 100; eval: 48].
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// No end of sequence before this many new tokens [default: 0].
    #[arg(long)]
    pub min_new_tokens: Option<usize>,
    /// Sample instead of taking the most likely token (`--do-sample=false` turns a recipe's sampling off).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub do_sample: Option<bool>,
    /// Sampling temperature [default: 1].
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Sample from the k most likely tokens only.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sample from the most likely tokens whose probability reaches p (nucleus sampling).
    #[arg(long)]
    pub top_p: Option<f64>,
    /// > 1 discourages tokens already in the text [default: 1].
    #[arg(long)]
    pub repetition_penalty: Option<f64>,
    /// No n-gram of this size twice in a text [default: 0 = off].
    #[arg(long)]
    pub no_repeat_ngram_size: Option<usize>,
    /// A text whose tokens are never produced (repeatable; transformers' bad_words_ids, as text).
    #[arg(long = "bad-word", value_name = "TEXT")]
    pub bad_words: Vec<String>,
    /// End a text when it contains this string, cut before it (repeatable; transformers' stop_strings).
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop_strings: Vec<String>,
    /// Stop token [default: the tokenizer's eos; ruPrompts' pipelines use 0, ruGPT-3's <pad>].
    #[arg(long)]
    pub eos_token_id: Option<i64>,
    /// Beam search with this many hypotheses [default: 1 = greedy or sampling].
    #[arg(long)]
    pub num_beams: Option<usize>,
    /// Beam search scores log-probability / length^p: > 0 favours longer texts, < 0 shorter [default: 1].
    #[arg(long)]
    pub length_penalty: Option<f64>,
    /// When beam search stops: true, false or never (as transformers) [default: false].
    #[arg(long, value_parser = EarlyStopping::parse)]
    pub early_stopping: Option<EarlyStopping>,
    /// Outputs per input (beam search: the best, at most --num-beams) [default: 1].
    #[arg(long)]
    pub num_return_sequences: Option<usize>,
    /// Seed of the sampler: the same text for an input alone or in any batch.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Re-read the whole sequence every step instead of using the KV cache (slower; for checking).
    #[arg(long)]
    pub no_cache: bool,
}

impl DecodingArgs {
    /// Whether any knob was given.
    pub fn given(&self) -> bool {
        let defaults = GenerationConfig::default();
        self.over(defaults.clone()) != defaults
    }

    /// `base` with every knob given on the command line set.
    pub fn over(&self, base: GenerationConfig) -> GenerationConfig {
        let mut c = base;
        macro_rules! set {
            ($($field:ident),*) => { $(if let Some(v) = self.$field.clone() { c.$field = v; })* };
        }
        set!(max_new_tokens, min_new_tokens, do_sample, temperature, repetition_penalty, no_repeat_ngram_size);
        set!(num_beams, length_penalty, early_stopping, num_return_sequences);
        c.top_k = self.top_k.or(c.top_k);
        c.top_p = self.top_p.or(c.top_p);
        c.eos_token_id = self.eos_token_id.or(c.eos_token_id);
        c.seed = self.seed.or(c.seed);
        c.bad_words.extend(self.bad_words.iter().cloned());
        c.stop_strings.extend(self.stop_strings.iter().cloned());
        c.use_cache &= !self.no_cache;
        c
    }
}
