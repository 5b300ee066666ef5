//! Requests checked before anything is queued: the JSON body (errors say where it is wrong), then every setting
//! against what this server takes, turned into the decoding settings and the prompts' token ids (a chat request's
//! messages through the chat template), each within the model's window. Every refusal is a 4xx naming the field.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::api::{ApiError, CompletionRequest, PromptField, Stop};
use super::inputs::{Models, Prepared};
use super::options::Options;
use crate::generate::GenerationConfig;

/// What checking a request needs of the server.
pub struct Server<'a> {
    pub models: &'a Models,
    pub options: &'a Options,
    /// The tokenizer's end-of-text id, where decoding stops.
    pub eos: Option<i64>,
}

/// A JSON body, or the error saying where it is wrong (413 past the size limit).
pub fn parse<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|r| {
        let status = r.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "the request body is larger than this server takes (--max-body-bytes)".to_string()
        } else {
            r.body_text()
        };
        ApiError { status, message, param: None, code: None, retry_after: None }
    })?;
    let mut de = serde_json::Deserializer::from_slice(&body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let at = e.path().to_string();
        let inner = e.into_inner();
        let message = match at.as_str() {
            "." => format!("the body is not a valid request: {inner}"),
            "prompt" if inner.is_data() => {
                "`prompt` must be a string, a list of strings, a list of token ids or a list of lists of \
                         token ids"
                    .to_string()
            }
            _ => format!("`{at}`: {inner}"),
        };
        ApiError::invalid(None, message)
    })
}

/// A checked completion request.
pub struct Plan {
    pub model: String,
    pub prompts: Vec<Prepared>,
    pub config: GenerationConfig,
    pub logprobs: Option<usize>,
    pub echo: bool,
    pub stream: bool,
    pub include_usage: bool,
    /// Answered in the chat API's shape (`/v1/chat/completions`).
    pub chat: bool,
}

/// Checks a completion request; with `messages` (a chat request) they make the one prompt.
pub fn plan(server: &Server, r: CompletionRequest, messages: Option<Vec<Value>>) -> Result<Plan, ApiError> {
    server.models.check(&r.model)?;
    let n = r.n.unwrap_or(1);
    if n == 0 || n > server.options.max_n {
        return Err(ApiError::invalid(
            Some("n"),
            format!("n is {n}; this server takes 1 to {} (--max-n)", server.options.max_n),
        ));
    }
    refuse_unsupported(&r, n)?;
    let config = server.decoding(&r, n)?;
    let chat = messages.is_some();
    let prompts = server.prompts(&r.model, r.prompt, r.fields.as_ref(), messages, config.max_new_tokens)?;
    Ok(Plan {
        model: r.model,
        prompts,
        config,
        logprobs: r.logprobs,
        echo: r.echo.unwrap_or(false),
        stream: r.stream.unwrap_or(false),
        include_usage: r.stream_options.is_some_and(|o| o.include_usage),
        chat,
    })
}

/// OpenAI's settings this server does not implement, refused unless they ask for nothing (`best_of` equal to `n`,
/// penalties 0, an empty `logit_bias` or `suffix`).
fn refuse_unsupported(r: &CompletionRequest, n: usize) -> Result<(), ApiError> {
    if r.best_of.is_some_and(|b| b != n) {
        return Err(ApiError::invalid(Some("best_of"), "best_of other than n is not supported; num_beams ranks beams"));
    }
    for (name, value) in [("frequency_penalty", r.frequency_penalty), ("presence_penalty", r.presence_penalty)] {
        if value.is_some_and(|v| v != 0.0) {
            return Err(ApiError::invalid(Some(name), format!("{name} is not supported; use repetition_penalty")));
        }
    }
    if r.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
        return Err(ApiError::invalid(Some("logit_bias"), "logit_bias is not supported; use bad_words"));
    }
    if r.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid(Some("suffix"), "suffix (insertion) is not supported"));
    }
    Ok(())
}

impl Server<'_> {
    /// The decoding settings of a request (`n` sequences per prompt), each within what this server takes.
    fn decoding(&self, r: &CompletionRequest, n: usize) -> Result<GenerationConfig, ApiError> {
        let most = self.options.max_logprobs.min(self.models.vocab as usize);
        if let Some(k) = r.logprobs.filter(|&k| k > most) {
            return Err(ApiError::invalid(Some("logprobs"), format!("logprobs is {k}; at most {most}")));
        }
        let temperature = r.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::invalid(
                Some("temperature"),
                format!("temperature is {temperature}; it must be 0 to 2"),
            ));
        }
        let stop_strings = match &r.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stop_strings.len() > 4 || stop_strings.iter().any(String::is_empty) {
            return Err(ApiError::invalid(Some("stop"), "stop takes up to 4 non-empty strings"));
        }
        let num_beams = r.num_beams.unwrap_or(1);
        // Beams are rows, as `n`'s sequences are; a step keeps the 2·num_beams best of the vocabulary.
        let beams = self.options.max_n.min(self.models.vocab as usize / 2).max(1);
        if num_beams == 0 || num_beams > beams {
            return Err(ApiError::invalid(
                Some("num_beams"),
                format!("num_beams is {num_beams}; this server takes 1 to {beams} (--max-n, and half the vocabulary)"),
            ));
        }
        let stream = r.stream.unwrap_or(false);
        if num_beams > 1 {
            if r.temperature.is_some_and(|t| t > 0.0) {
                return Err(ApiError::invalid(
                    Some("temperature"),
                    "beam search decodes deterministically: set temperature 0",
                ));
            }
            if stream || r.logprobs.is_some() {
                return Err(ApiError::invalid(
                    Some("num_beams"),
                    "beam search settles its texts only at the end: it cannot stream or report logprobs",
                ));
            }
        }
        let defaults = GenerationConfig::default();
        let config = GenerationConfig {
            max_new_tokens: r.max_tokens.unwrap_or(16),
            min_new_tokens: r.min_tokens.unwrap_or(0),
            do_sample: temperature > 0.0 && num_beams == 1,
            temperature: if temperature > 0.0 { temperature } else { 1.0 },
            top_k: r.top_k,
            top_p: r.top_p,
            repetition_penalty: r.repetition_penalty.unwrap_or(1.0),
            no_repeat_ngram_size: r.no_repeat_ngram_size.unwrap_or(0),
            bad_words: r.bad_words.clone().unwrap_or_default(),
            stop_strings,
            eos_token_id: self.eos,
            num_beams,
            length_penalty: r.length_penalty.unwrap_or(defaults.length_penalty),
            early_stopping: r.early_stopping.unwrap_or(defaults.early_stopping),
            num_return_sequences: n,
            seed: r.seed.map(|s| u64::from_ne_bytes(s.to_ne_bytes())),
            use_cache: true,
        };
        // max_tokens 0 only scores the prompt (with echo and logprobs), which the generation settings know nothing of.
        let scoring = GenerationConfig { max_new_tokens: config.max_new_tokens.max(1), ..config.clone() };
        scoring.validate().map_err(|e| ApiError::invalid(None, format!("{e:#}")))?;
        if config.max_new_tokens == 0 && num_beams > 1 {
            return Err(ApiError::invalid(Some("max_tokens"), "beam search needs max_tokens of at least 1"));
        }
        Ok(config)
    }

    /// The token ids of a request's prompts for `model` (its `messages` through the chat template, for a chat
    /// request), `fields` filling a prompt's format, each with room in the model's window for `max_new_tokens`.
    fn prompts(
        &self,
        model: &str,
        prompt: PromptField,
        fields: Option<&Map<String, Value>>,
        messages: Option<Vec<Value>>,
        max_new_tokens: usize,
    ) -> Result<Vec<Prepared>, ApiError> {
        let prepared = match messages {
            Some(messages) => vec![self.models.prepare_chat(model, &messages, fields)?],
            None => {
                let inputs = prompt.inputs();
                if inputs.is_empty() {
                    return Err(ApiError::invalid(Some("prompt"), "the prompt list is empty"));
                }
                inputs.iter().map(|input| self.models.prepare(model, input, fields)).collect::<Result<Vec<_>, _>>()?
            }
        };
        let window = self.models.window;
        let mut prompts = Vec::with_capacity(prepared.len());
        for prepared in prepared {
            let asked = prepared.ids.len().saturating_add(max_new_tokens);
            if asked > window {
                let param = if prepared.ids.len() >= window { "prompt" } else { "max_tokens" };
                return Err(ApiError::invalid(
                    Some(param),
                    format!(
                        "this model's maximum context length is {window} tokens, however you requested {asked} tokens \
                         ({} in your prompt; {} for the completion); reduce your prompt or max_tokens",
                        prepared.ids.len(),
                        max_new_tokens
                    ),
                ));
            }
            prompts.push(prepared);
        }
        Ok(prompts)
    }
}
