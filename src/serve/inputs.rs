//! What a request's `model` and `prompt` become: token ids for the model, the prompt format filled where a tuned
//! prompt is named, and where the request's own tokens start (what `echo` returns).

use std::ops::Range;

use anyhow::Result;
use serde_json::{Map, Value};

use super::api::{ApiError, PromptInput};
use crate::format::PromptFormat;
use crate::tokenizer::Tokenizer;

/// The models one server answers for: the frozen model alone (zero-shot) and each prompt by its key.
pub struct Models {
    /// The id of the frozen model without a prompt.
    pub base: String,
    /// The model's tokenizer, the prompts' tokens added.
    pub tokenizer: Tokenizer,
    /// Each prompt's key and format (keyed prompt tokens).
    pub formats: Vec<(String, PromptFormat)>,
    /// Positions the model reads.
    pub window: usize,
    /// Tokens the model has.
    pub vocab: i64,
    /// The prompts' token ids, which only a format may place.
    prompt_ids: Vec<i64>,
}

/// One prompt ready to decode.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub ids: Vec<i64>,
    /// Where the request's own tokens are in `ids` (a format's prompt tokens and text around them are not).
    pub own: Range<usize>,
    /// The request's prompt as text.
    pub text: String,
}

impl Models {
    pub fn new(
        base: String,
        tokenizer: Tokenizer,
        formats: Vec<(String, PromptFormat)>,
        window: usize,
        vocab: i64,
    ) -> Self {
        let prompt_ids =
            formats.iter().filter_map(|(_, f)| tokenizer.token_to_id(f.prompt_token())).map(i64::from).collect();
        Self { base, tokenizer, formats, window, vocab, prompt_ids }
    }

    /// Every model id: the base model's, then the prompt keys.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.base.as_str()).chain(self.formats.iter().map(|(k, _)| k.as_str()))
    }

    /// Checks that `model` is served; 404 naming those that are.
    pub fn check(&self, model: &str) -> Result<(), ApiError> {
        if self.ids().any(|id| id == model) {
            return Ok(());
        }
        Err(ApiError {
            param: Some("model"),
            ..ApiError::with_status(
                axum::http::StatusCode::NOT_FOUND,
                "model_not_found",
                format!(
                    "the model `{model}` does not exist; this server has {}",
                    self.ids().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    }

    /// Token ids of `prompt` for `model`: the text (or ids) alone for the base model; for a prompt key, its
    /// format filled from `fields` and the prompt, which fills the one field `fields` leaves out.
    pub fn prepare(
        &self,
        model: &str,
        prompt: &PromptInput,
        fields: Option<&Map<String, Value>>,
    ) -> Result<Prepared, ApiError> {
        let bad = |m: String| ApiError::invalid(Some("prompt"), m);
        let internal = |e: anyhow::Error| ApiError::internal(format!("{e:#}"));
        let format = self.formats.iter().find(|(k, _)| k == model).map(|(_, f)| f);
        let (before, after) = match format {
            None => {
                if fields.is_some_and(|f| !f.is_empty()) {
                    return Err(ApiError::invalid(
                        Some("fields"),
                        format!("`fields` fill a prompt's format, but `{model}` is the model without a prompt"),
                    ));
                }
                (String::new(), String::new())
            }
            Some(format) => {
                let mut row = fields.cloned().unwrap_or_default();
                let names = format.fields();
                if let Some(unknown) = row.keys().find(|k| !names.contains(&k.as_str())) {
                    return Err(ApiError::invalid(
                        Some("fields"),
                        format!(
                            "unknown field `{unknown}`: the format {:?} of `{model}` has {}",
                            format.template(),
                            names.join(", ")
                        ),
                    ));
                }
                let missing: Vec<&str> = names.iter().copied().filter(|n| !row.contains_key(*n)).collect();
                let slot = match missing.as_slice() {
                    [] => None,
                    [one] => Some(one.to_string()),
                    many => {
                        return Err(ApiError::invalid(
                            Some("fields"),
                            format!(
                                "the format {:?} of `{model}` has the fields {}: give all but one of them in `fields` (the prompt fills the last)",
                                format.template(),
                                many.join(", ")
                            ),
                        ))
                    }
                };
                // The request's text goes where the empty slot is; everything else is the format's.
                if let Some(slot) = &slot {
                    row.insert(slot.clone(), Value::String(String::new()));
                }
                let formatted = format.format(&row).map_err(|e| ApiError::invalid(Some("fields"), e.to_string()))?;
                match slot.and_then(|s| formatted.spans.iter().find(|span| span.field == s).cloned()) {
                    Some(span) => {
                        (formatted.text[..span.bytes.start].to_string(), formatted.text[span.bytes.end..].to_string())
                    }
                    None => {
                        let empty = match prompt {
                            PromptInput::Text(t) => t.is_empty(),
                            PromptInput::Ids(ids) => ids.is_empty(),
                        };
                        if !empty {
                            return Err(bad(format!(
                                "`fields` fill every field of the format {:?} of `{model}`: leave the prompt empty",
                                format.template()
                            )));
                        }
                        (formatted.text, String::new())
                    }
                }
            }
        };
        let (ids, own, text) = match prompt {
            PromptInput::Text(text) => {
                // Tokenized whole, as training and evaluation tokenize a formatted row.
                let whole = format!("{before}{text}{after}");
                let encoding = self.tokenizer.encode_sequence(&whole).map_err(internal)?;
                let start = before.chars().count();
                let end = start + text.chars().count();
                let offsets = encoding.get_offsets();
                let first = offsets.iter().position(|&(_, e)| e > start).unwrap_or(offsets.len());
                let last = offsets.iter().position(|&(b, _)| b >= end).unwrap_or(offsets.len()).max(first);
                let ids = encoding.get_ids().iter().map(|&i| i64::from(i)).collect();
                (ids, first..last, text.clone())
            }
            PromptInput::Ids(given) => {
                if let Some(id) =
                    given.iter().find(|&&id| !(0..self.vocab).contains(&id) || self.prompt_ids.contains(&id))
                {
                    return Err(bad(format!("token id {id} is not one of the model's {} tokens", self.vocab)));
                }
                // Given ids are used as they are (no BOS added, as OpenAI-compatible servers do); a format's text
                // before them starts the sequence.
                let head = match before.is_empty() {
                    true => Vec::new(),
                    false => self.tokenizer.encode_sequence_ids(&before).map_err(internal)?,
                };
                let tail = self.tokenizer.encode_ids(&after).map_err(internal)?;
                let text = self.tokenizer.decode(given).map_err(internal)?;
                ([head.as_slice(), given, &tail].concat(), head.len()..head.len() + given.len(), text)
            }
        };
        // Text that spells a prompt token would inject a prompt where the format puts none.
        let placed = match format {
            Some(f) => f.prompt_length(),
            None => 0,
        };
        if ids.iter().filter(|id| self.prompt_ids.contains(id)).count() != placed {
            return Err(bad(
                "the prompt spells a prompt token (<|...P|>), which only a prompt's format may place".into()
            ));
        }
        if ids.is_empty() {
            return Err(bad("the prompt is empty: the model needs at least one token to continue".into()));
        }
        Ok(Prepared { ids, own, text })
    }
}
