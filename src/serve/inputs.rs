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

    /// The text a prompt key's format puts before and after the request's text (none for the base model): the
    /// format filled from `fields` and an empty slot where the one field `fields` leaves out goes. `empty` says
    /// whether the request's own text is empty, which a format whose every field `fields` fill requires.
    fn around(
        &self,
        model: &str,
        fields: Option<&Map<String, Value>>,
        empty: bool,
    ) -> Result<(String, String), ApiError> {
        let bad = |m: String| ApiError::invalid(Some("prompt"), m);
        let format = self.formats.iter().find(|(k, _)| k == model).map(|(_, f)| f);
        let Some(format) = format else {
            if fields.is_some_and(|f| !f.is_empty()) {
                return Err(ApiError::invalid(
                    Some("fields"),
                    format!("`fields` fill a prompt's format, but `{model}` is the model without a prompt"),
                ));
            }
            return Ok((String::new(), String::new()));
        };
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
                Ok((formatted.text[..span.bytes.start].to_string(), formatted.text[span.bytes.end..].to_string()))
            }
            None if empty => Ok((formatted.text, String::new())),
            None => Err(bad(format!(
                "`fields` fill every field of the format {:?} of `{model}`: leave the prompt empty",
                format.template()
            ))),
        }
    }

    /// How many prompt tokens `model`'s format places (none for the base model).
    fn placed(&self, model: &str) -> usize {
        self.formats.iter().find(|(k, _)| k == model).map_or(0, |(_, f)| f.prompt_length())
    }

    /// Checks that `ids` hold exactly the prompt tokens `model`'s format places, and at least one token.
    fn checked(&self, model: &str, prepared: Prepared, param: &'static str) -> Result<Prepared, ApiError> {
        let bad = |m: &str| ApiError::invalid(Some(param), m.to_string());
        // Text that spells a prompt token would inject a prompt where the format puts none.
        if prepared.ids.iter().filter(|id| self.prompt_ids.contains(id)).count() != self.placed(model) {
            return Err(bad("the prompt spells a prompt token (<|...P|>), which only a prompt's format may place"));
        }
        if prepared.ids.is_empty() {
            return Err(bad("the prompt is empty: the model needs at least one token to continue"));
        }
        Ok(prepared)
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
        let empty = match prompt {
            PromptInput::Text(t) => t.is_empty(),
            PromptInput::Ids(ids) => ids.is_empty(),
        };
        let (before, after) = self.around(model, fields, empty)?;
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
        self.checked(model, Prepared { ids, own, text }, "prompt")
    }

    /// Token ids of a conversation for `model`: the checkpoint's chat template rendered with the assistant's
    /// opening, tokenized as transformers' `apply_chat_template` tokenizes (the template writes the special
    /// tokens). For a prompt key, the last user message fills its format (with `fields`), prompt tokens and all.
    pub fn prepare_chat(
        &self,
        model: &str,
        messages: &[Value],
        fields: Option<&Map<String, Value>>,
    ) -> Result<Prepared, ApiError> {
        let bad = |m: String| ApiError::invalid(Some("messages"), m);
        let template = self.tokenizer.chat_template().ok_or_else(|| {
            bad(format!("`{model}`'s checkpoint has no chat template: use /v1/completions with a prompt of text"))
        })?;
        if messages.is_empty() {
            return Err(bad("`messages` is empty".into()));
        }
        let mut messages = messages.to_vec();
        for (i, m) in messages.iter_mut().enumerate() {
            let role = m.get("role").and_then(Value::as_str).map(str::to_string);
            let Some(role) = role.filter(|r| ["system", "user", "assistant", "developer"].contains(&r.as_str())) else {
                return Err(bad(format!("message {i} needs a role: system, user or assistant")));
            };
            // OpenAI's content parts: the text ones, joined.
            let text = match m.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .map(|p| match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                        (Some("text"), Some(t)) => Ok(t.to_string()),
                        _ => Err(bad(format!("message {i}: only text content parts are supported"))),
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .concat(),
                Some(Value::Null) | None if role == "assistant" => String::new(),
                _ => return Err(bad(format!("message {i} needs content: a string or text parts"))),
            };
            *m = serde_json::json!({"role": if role == "developer" { "system".to_string() } else { role }, "content": text});
        }
        let last_user = messages.iter().rposition(|m| m["role"] == "user");
        if self.placed(model) > 0 {
            let at = last_user.ok_or_else(|| {
                bad(format!("`{model}` is a prompt: its format takes the last user message, and there is none"))
            })?;
            let content = messages[at]["content"].as_str().unwrap_or_default().to_string();
            let (before, after) = self.around(model, fields, content.is_empty())?;
            messages[at]["content"] = Value::String(format!("{before}{content}{after}"));
        } else {
            self.around(model, fields, false)?;
        }
        let text = template.render(&messages, true).map_err(|e| bad(format!("{e:#}")))?;
        let ids = self.tokenizer.encode_ids(&text).map_err(|e| ApiError::internal(format!("{e:#}")))?;
        self.checked(model, Prepared { own: 0..ids.len(), ids, text }, "messages")
    }
}
