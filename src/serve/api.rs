//! The OpenAI completions API as its reference and clients define it: the request body, the answer and its
//! streamed chunks, and errors in OpenAI's shape. Knobs OpenAI lacks (beams, penalties, format fields) are extra
//! fields of the request, under transformers' names.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::generate::EarlyStopping;

/// `POST /v1/completions`. Unknown fields are refused, so a misspelt knob is an error, not a silent default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: PromptField,
    /// Values of the prompt format's other fields, when it has several.
    pub fields: Option<Map<String, Value>>,
    pub max_tokens: Option<usize>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub n: Option<usize>,
    pub stop: Option<Stop>,
    pub seed: Option<i64>,
    pub logprobs: Option<usize>,
    pub echo: Option<bool>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub best_of: Option<usize>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub logit_bias: Option<Map<String, Value>>,
    pub suffix: Option<String>,
    /// OpenAI's end-user id: accepted and not used.
    #[allow(dead_code)]
    pub user: Option<String>,
    pub top_k: Option<usize>,
    pub repetition_penalty: Option<f64>,
    pub no_repeat_ngram_size: Option<usize>,
    pub min_tokens: Option<usize>,
    pub bad_words: Option<Vec<String>>,
    pub num_beams: Option<usize>,
    pub length_penalty: Option<f64>,
    pub early_stopping: Option<EarlyStopping>,
}

/// `POST /v1/chat/completions`: a conversation instead of a prompt; the rest as [`CompletionRequest`] has it, under
/// the chat API's names (`max_completion_tokens`, `logprobs` true with `top_logprobs`). Unknown fields are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    pub model: String,
    /// `{role, content}` objects; the template renders them with the assistant's opening after them.
    pub messages: Vec<Value>,
    /// With a prompt key: the format's other fields (the last user message fills the one left out).
    pub fields: Option<Map<String, Value>>,
    pub max_tokens: Option<usize>,
    pub max_completion_tokens: Option<usize>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub n: Option<usize>,
    pub stop: Option<Stop>,
    pub seed: Option<i64>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<usize>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub logit_bias: Option<Map<String, Value>>,
    /// OpenAI's end-user id: accepted and not used.
    #[allow(dead_code)]
    pub user: Option<String>,
    pub top_k: Option<usize>,
    pub repetition_penalty: Option<f64>,
    pub no_repeat_ngram_size: Option<usize>,
    pub min_tokens: Option<usize>,
    pub bad_words: Option<Vec<String>>,
    pub num_beams: Option<usize>,
    pub length_penalty: Option<f64>,
    pub early_stopping: Option<EarlyStopping>,
}

impl ChatRequest {
    /// The completion request it amounts to (its prompt empty: the messages make it) and the messages.
    pub fn split(self) -> (CompletionRequest, Vec<Value>) {
        let request = CompletionRequest {
            model: self.model,
            prompt: PromptField::Texts(Vec::new()),
            fields: self.fields,
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            temperature: self.temperature,
            top_p: self.top_p,
            n: self.n,
            stop: self.stop,
            seed: self.seed,
            logprobs: self.logprobs.unwrap_or(false).then(|| self.top_logprobs.unwrap_or(0)),
            echo: None,
            stream: self.stream,
            stream_options: self.stream_options,
            best_of: None,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            logit_bias: self.logit_bias,
            suffix: None,
            user: self.user,
            top_k: self.top_k,
            repetition_penalty: self.repetition_penalty,
            no_repeat_ngram_size: self.no_repeat_ngram_size,
            min_tokens: self.min_tokens,
            bad_words: self.bad_words,
            num_beams: self.num_beams,
            length_penalty: self.length_penalty,
            early_stopping: self.early_stopping,
        };
        (request, self.messages)
    }
}

/// `prompt`: a text, several texts, token ids, or several lists of token ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptField {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<i64>),
    IdLists(Vec<Vec<i64>>),
}

/// One prompt of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput {
    Text(String),
    Ids(Vec<i64>),
}

impl PromptField {
    pub fn inputs(self) -> Vec<PromptInput> {
        match self {
            Self::Text(t) => vec![PromptInput::Text(t)],
            Self::Texts(t) => t.into_iter().map(PromptInput::Text).collect(),
            Self::Ids(ids) => vec![PromptInput::Ids(ids)],
            Self::IdLists(lists) => lists.into_iter().map(PromptInput::Ids).collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// `logprobs` of a choice: per token its text, log-probability (none for an input's first token), most likely
/// alternatives and character offset in the choice's text.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Logprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<Option<f32>>,
    pub top_logprobs: Vec<Option<Map<String, Value>>>,
    pub text_offset: Vec<usize>,
    /// The alternatives of each token in order, best first, even where two decode to the same text (which the
    /// completions API's map merges): what the chat API lists.
    #[serde(skip)]
    pub top_list: Vec<Vec<(String, f32)>>,
}

impl Logprobs {
    /// `other`'s tokens after these.
    pub fn append(&mut self, other: Logprobs) {
        self.tokens.extend(other.tokens);
        self.token_logprobs.extend(other.token_logprobs);
        self.top_logprobs.extend(other.top_logprobs);
        self.text_offset.extend(other.text_offset);
        self.top_list.extend(other.top_list);
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Choice {
    pub text: String,
    pub index: usize,
    pub logprobs: Option<Logprobs>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

/// A whole answer, or (with `usage` left out until the end) one streamed chunk.
#[derive(Debug, Serialize)]
pub struct Completion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// An error answered in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
    /// Seconds to wait before retrying (a `Retry-After` header), for a busy server.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// 400: the request is wrong; `param` names the field at fault.
    pub fn invalid(param: Option<&'static str>, message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into(), param, code: None, retry_after: None }
    }

    pub fn with_status(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), param: None, code: Some(code), retry_after: None }
    }

    /// 429: the server is busy for now; retry in a second.
    pub fn busy(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::with_status(StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded", message)
        }
    }

    /// 500: our fault, not the request's.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::with_status(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }

    fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind(), "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}
