//! How to decode: the knobs of Hugging Face's `generate`, with its names and defaults except where noted.

use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationConfig {
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    /// The end of sequence cannot come before this many new tokens (transformers bans eos until then).
    #[serde(default)]
    pub min_new_tokens: usize,
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
    /// No n-gram of this size occurs twice in a row (its input included); 0 = off.
    #[serde(default)]
    pub no_repeat_ngram_size: usize,
    /// Texts whose tokens are never produced: each text's token sequence, alone and after a space (transformers'
    /// `bad_words_ids`, given as text). The same letters in another split of tokens can still come out.
    #[serde(default)]
    pub bad_words: Vec<String>,
    /// A row ends once its new text contains one of these; the text returned stops before it (transformers'
    /// `stop_strings`, lm-evaluation-harness' `until`).
    #[serde(default)]
    pub stop_strings: Vec<String>,
    /// Stop a row after this token (ruPrompts' pipelines use 0, ruGPT-3's `<pad>`; the tokenizer's eos otherwise).
    #[serde(default)]
    pub eos_token_id: Option<i64>,
    /// Beam search with this many hypotheses per input; 1 = greedy decoding or sampling.
    #[serde(default = "one_usize")]
    pub num_beams: usize,
    /// Beam search ranks finished hypotheses by their log-probability over length^length_penalty: > 0 favours
    /// longer outputs, < 0 shorter ones.
    #[serde(default = "one")]
    pub length_penalty: f64,
    /// When beam search ends an input: `true` as soon as it has `num_beams` finished hypotheses, `false` once no
    /// running one can beat them (judged at the current length), `never` judged at the longest length.
    #[serde(default)]
    pub early_stopping: EarlyStopping,
    /// Outputs per input (under beam search, the best ones, at most `num_beams`).
    #[serde(default = "one_usize")]
    pub num_return_sequences: usize,
    /// Seed of the sampler, for reproducible samples: sequence j of every input draws from stream j of this seed,
    /// so an input samples the same text alone or in any batch.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Feed one new token per step with the KV cache (else re-read the whole sequence every step).
    #[serde(default = "yes")]
    pub use_cache: bool,
}

/// transformers' `early_stopping`: `true`, `false` or `"never"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EarlyStopping {
    True,
    #[default]
    False,
    Never,
}

impl EarlyStopping {
    /// Reads `true`, `false` or `never` (the CLI's spelling and the YAML's).
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "true" => Ok(Self::True),
            "false" => Ok(Self::False),
            "never" => Ok(Self::Never),
            other => bail!("early_stopping is true, false or never, not {other:?}"),
        }
    }
}

impl Serialize for EarlyStopping {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::True => s.serialize_bool(true),
            Self::False => s.serialize_bool(false),
            Self::Never => s.serialize_str("never"),
        }
    }
}

impl<'de> Deserialize<'de> for EarlyStopping {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(Self::True),
            Raw::Bool(false) => Ok(Self::False),
            Raw::Text(t) => Self::parse(&t).map_err(serde::de::Error::custom),
        }
    }
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
    /// Refuses settings that decode nothing, contradict each other or make the sampler's distribution
    /// meaningless, naming the setting (and its command-line flag).
    /// The decoding in words, for reports: `greedy generation`, `beam search (4 beams)`, `sampling (temperature
    /// 0.7, top-p 0.9, seed 1)`, with a repetition penalty when set and the new-token limit.
    pub fn describe(&self) -> String {
        let mut how = if self.num_beams > 1 {
            format!("beam search ({} beams)", self.num_beams)
        } else if self.do_sample {
            let mut knobs = vec![format!("temperature {}", self.temperature)];
            knobs.extend(self.top_k.map(|k| format!("top-k {k}")));
            knobs.extend(self.top_p.map(|p| format!("top-p {p}")));
            knobs.extend(self.seed.map(|s| format!("seed {s}")));
            format!("sampling ({})", knobs.join(", "))
        } else {
            "greedy generation".to_string()
        };
        if self.repetition_penalty != 1.0 {
            how += &format!(", repetition penalty {}", self.repetition_penalty);
        }
        how + &format!(", up to {} new tokens", self.max_new_tokens)
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(self.max_new_tokens >= 1, "max_new_tokens (--max-new-tokens) must be at least 1");
        ensure!(
            self.min_new_tokens <= self.max_new_tokens,
            "min_new_tokens (--min-new-tokens) is {}, more than max_new_tokens (--max-new-tokens) {}",
            self.min_new_tokens,
            self.max_new_tokens
        );
        ensure!(self.num_return_sequences >= 1, "num_return_sequences (--num-return-sequences) must be at least 1");
        ensure!(self.num_beams >= 1, "num_beams (--num-beams) must be at least 1 (1 = no beam search)");
        if self.num_beams > 1 {
            ensure!(
                self.num_return_sequences <= self.num_beams,
                "num_return_sequences (--num-return-sequences) is {}, more than num_beams (--num-beams) {}: beam \
                 search returns at most its {} best hypotheses",
                self.num_return_sequences,
                self.num_beams,
                self.num_beams
            );
            ensure!(
                !self.do_sample,
                "beam search with sampling (num_beams > 1 with do_sample) is not supported: use beams or sampling"
            );
        }
        let lp = self.length_penalty;
        ensure!(lp.is_finite(), "length_penalty (--length-penalty) must be a finite number, not {lp}");
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
        ensure!(
            self.stop_strings.iter().all(|s| !s.is_empty()),
            "a stop string (stop_strings, --stop) is empty: it would end every row before its first token"
        );
        ensure!(self.bad_words.iter().all(|s| !s.is_empty()), "a bad word (bad_words, --bad-word) is empty");
        Ok(())
    }
}

impl Default for GenerationConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reports say how the texts were decoded, not "greedy" whatever was asked.
    #[test]
    fn the_decoding_is_described_as_asked() {
        let base = GenerationConfig { max_new_tokens: 20, ..Default::default() };
        assert_eq!(base.describe(), "greedy generation, up to 20 new tokens");
        let beams = GenerationConfig { num_beams: 4, ..base.clone() };
        assert_eq!(beams.describe(), "beam search (4 beams), up to 20 new tokens");
        let sampled = GenerationConfig {
            do_sample: true,
            temperature: 0.7,
            top_p: Some(0.9),
            seed: Some(1),
            repetition_penalty: 1.2,
            ..base
        };
        assert_eq!(
            sampled.describe(),
            "sampling (temperature 0.7, top-p 0.9, seed 1), repetition penalty 1.2, up to 20 new tokens"
        );
    }

    #[test]
    fn early_stopping_reads_as_transformers_writes_it() {
        let read = |json: &str| serde_json::from_str::<GenerationConfig>(json).map(|c| c.early_stopping);
        assert_eq!(read(r#"{"early_stopping": true}"#).unwrap(), EarlyStopping::True);
        assert_eq!(read(r#"{"early_stopping": false}"#).unwrap(), EarlyStopping::False);
        assert_eq!(read(r#"{"early_stopping": "never"}"#).unwrap(), EarlyStopping::Never);
        let err = read(r#"{"early_stopping": "sometimes"}"#).unwrap_err().to_string();
        assert!(err.contains(r#"early_stopping is true, false or never, not "sometimes""#), "{err}");
        let config = GenerationConfig { early_stopping: EarlyStopping::Never, ..Default::default() };
        let back: GenerationConfig = serde_json::from_str(&serde_json::to_string(&config).unwrap()).unwrap();
        assert_eq!(back, config);
    }
}
