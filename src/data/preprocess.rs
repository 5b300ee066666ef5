//! Rows → token ids and labels for prompt tuning, as ruPrompts' `Text2TextPreprocessor` does it: the formatted
//! row, then the target text and EOS; loss only on the target; when too long, the truncation field is cut from
//! its end so every prompt token survives. Classification is the same with the label's verbalizer as target.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Origin, Record};
use crate::format::PromptFormat;
use crate::tokenizer::Tokenizer;

/// Label id that the loss ignores (PyTorch's `ignore_index`).
pub const IGNORE: i64 = -100;

/// The `preprocessing` section: what the model learns to write after the formatted row, and how long a
/// sequence may be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PreprocessConfig {
    /// The target is the text of a field (summaries, detoxified sentences, answers).
    Text2text {
        target_field: String,
        /// Field to shorten (from its end) when a sequence is longer than `max_tokens`.
        #[serde(default)]
        truncation_field: Option<String>,
        #[serde(default = "default_max_tokens")]
        max_tokens: usize,
        /// What to do with a row that does not fit in `max_tokens` even after truncation.
        #[serde(default)]
        too_long: TooLongPolicy,
    },
    /// The target is the label's verbalizer text, e.g. `{entailment: " да", not_entailment: " нет"}`; booleans
    /// and numbers are looked up by their text (`true`, `1`). With `dataset.task` the candidates are the task's
    /// (verbalized labels, PARus' alternatives, RuCoS' entities), read and tokenized as `ruprompts eval` does.
    Classification {
        #[serde(default = "default_label_field")]
        label_field: String,
        /// Needed without `dataset.task`; with it, the default is the task's bundled verbalizers.
        #[serde(default)]
        verbalizers: BTreeMap<String, String>,
        #[serde(default)]
        truncation_field: Option<String>,
        #[serde(default = "default_max_tokens")]
        max_tokens: usize,
        /// What to do with a row that does not fit in `max_tokens` even after truncation.
        #[serde(default)]
        too_long: TooLongPolicy,
    },
}

/// A row that cannot be made to fit: stop with an error naming it (the default), or leave it out and report
/// how many were left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TooLongPolicy {
    #[default]
    Error,
    Skip,
}

/// The error for a row that does not fit in `max_tokens`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TooLong(pub String);

fn default_label_field() -> String {
    "label".to_string()
}

fn default_max_tokens() -> usize {
    256
}

impl PreprocessConfig {
    /// Label → target text of classification (`None` for text2text).
    pub fn verbalizers(&self) -> Option<&BTreeMap<String, String>> {
        match self {
            Self::Classification { verbalizers, .. } => Some(verbalizers),
            Self::Text2text { .. } => None,
        }
    }

    pub fn truncation_field(&self) -> Option<&str> {
        match self {
            Self::Text2text { truncation_field, .. } | Self::Classification { truncation_field, .. } => {
                truncation_field.as_deref()
            }
        }
    }

    pub fn too_long(&self) -> TooLongPolicy {
        match self {
            Self::Text2text { too_long, .. } | Self::Classification { too_long, .. } => *too_long,
        }
    }

    pub fn max_tokens(&self) -> usize {
        match self {
            Self::Text2text { max_tokens, .. } | Self::Classification { max_tokens, .. } => *max_tokens,
        }
    }
}

/// One encoded row: `labels[i]` is `input_ids[i]` on the target and [`IGNORE`] elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub input_ids: Vec<i64>,
    pub labels: Vec<i64>,
}

/// Encodes rows for one prompt format and tokenizer (with the prompt token already added).
#[derive(Debug)]
pub struct Preprocessor<'a> {
    format: &'a PromptFormat,
    tokenizer: &'a Tokenizer,
    config: &'a PreprocessConfig,
    eos: String,
}

impl<'a> Preprocessor<'a> {
    pub fn new(format: &'a PromptFormat, tokenizer: &'a Tokenizer, config: &'a PreprocessConfig) -> Result<Self> {
        if let Some(field) = config.truncation_field() {
            ensure!(
                format.fields().contains(&field),
                "truncation_field '{field}' is not a field of the format {:?} (its fields: {})",
                format.template(),
                format.fields().join(", ")
            );
        }
        let eos = tokenizer.special().eos.and_then(|id| tokenizer.id_to_token(id)).unwrap_or_default();
        Ok(Self { format, tokenizer, config, eos })
    }

    /// The same preprocessor with the EOS after the target kept (`true`, ruPrompts') or left out of the text.
    pub fn counting_eos(mut self, eos: bool) -> Self {
        if !eos {
            self.eos.clear();
        }
        self
    }

    /// The target text of `record` (its field, or its label's verbalizer).
    pub fn target(&self, record: &Record) -> Result<String> {
        let row = &record.row;
        let (field, value) = match self.config {
            PreprocessConfig::Text2text { target_field, .. } => (target_field, row.get(target_field)),
            PreprocessConfig::Classification { label_field, .. } => (label_field, row.get(label_field)),
        };
        let text = match value {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Bool(b)) => b.to_string(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => bail!("{}: field '{field}' is not text", record.origin),
            None => bail!("{}: the row has no field '{field}'", record.origin),
        };
        match self.config {
            PreprocessConfig::Text2text { .. } => Ok(text),
            PreprocessConfig::Classification { verbalizers, .. } => verbalizers.get(&text).cloned().ok_or_else(|| {
                let known: Vec<&str> = verbalizers.keys().map(String::as_str).collect();
                anyhow!("{}: label {text:?} has no verbalizer (known: {})", record.origin, known.join(", "))
            }),
        }
    }

    /// Encodes `record` with `target` as what follows the formatted row.
    pub fn encode_with_target(&self, record: &Record, target: &str) -> Result<Example> {
        let formatted = self.format.format(&record.row).with_context(|| record.origin.to_string())?;
        let text = format!("{}{target}{}", formatted.text, self.eos);
        let enc = self.tokenizer.encode_sequence(&text)?;
        let token_at = |char_pos: usize| {
            enc.char_to_token(char_pos, 0).ok_or_else(|| anyhow!("{}: no token at char {char_pos}", record.origin))
        };
        let mut ids: Vec<i64> = enc.get_ids().iter().map(|&id| i64::from(id)).collect();
        let target_chars = formatted.text.chars().count();
        ensure!(!target.is_empty() || !self.eos.is_empty(), "{}: the target is empty", record.origin);
        let mut target_start = token_at(target_chars)?;
        let max = self.config.max_tokens();
        if ids.len() > max {
            let excess = ids.len() - max;
            let Some(field) = self.config.truncation_field() else {
                bail!(
                    "{}: {} tokens, more than max_tokens {max}, and no truncation_field is set",
                    record.origin,
                    ids.len()
                );
            };
            let span = formatted.spans.iter().find(|s| s.field == field).expect("checked in new()");
            let (start, end) = (token_at(span.chars.start)?, token_at(span.chars.end)?);
            if end - start < excess {
                return Err(TooLong(format!(
                    "{}: {} tokens; even without field '{field}' ({} tokens) it exceeds max_tokens {max}",
                    record.origin,
                    ids.len(),
                    end - start
                ))
                .into());
            }
            ids.drain(end - excess..end);
            target_start -= excess;
        }
        let labels = ids.iter().enumerate().map(|(i, &id)| if i >= target_start { id } else { IGNORE }).collect();
        Ok(Example { input_ids: ids, labels })
    }

    /// Encodes `record` for training: formatted row, target, EOS.
    pub fn encode(&self, record: &Record) -> Result<Example> {
        self.encode_with_target(record, &self.target(record)?)
    }

    /// Encodes every record; rows that do not fit are an error, or, with `too_long: skip`, left out and
    /// returned as the second value (their origins).
    pub fn encode_all(&self, records: &[Record]) -> Result<(Vec<Example>, Vec<Origin>)> {
        let (mut examples, mut skipped) = (Vec::with_capacity(records.len()), Vec::new());
        for record in records {
            match self.encode(record) {
                Ok(example) => examples.push(example),
                Err(e) if self.config.too_long() == TooLongPolicy::Skip && e.is::<TooLong>() => {
                    skipped.push(record.origin.clone())
                }
                Err(e) => return Err(e),
            }
        }
        Ok((examples, skipped))
    }
}
