//! The HTTP side: routes, bearer-key checks, request checks, and answers assembled from the decoding thread's
//! updates, whole or streamed as server-sent events.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tokio_stream::{StreamExt, StreamMap};
use tower_http::catch_panic::CatchPanicLayer;

use super::api::{ApiError, ChatRequest, Choice, Completion, CompletionRequest, Logprobs, Stop, Usage};
use super::engine::{Engine, Event, Intake, Limits, Refused};
use super::inputs::{Models, Prepared};
use super::listen::{accept, Connections};
use super::metrics::Metrics;
use crate::generate::{cut_at_stop, settled, GenerationConfig, Job, TokenLogprobs, Update};
use crate::model::Model;
use crate::prompt::MultiPrompt;
use crate::tokenizer::Tokenizer;

/// What one server serves: a frozen model, its tokenizer, and the prompts by key.
pub struct Served {
    /// The model's id in the API (`model` of a request without a prompt).
    pub base: String,
    pub model: Model,
    pub tokenizer: Tokenizer,
    /// Prompts by key; their tokens are added to `tokenizer` already.
    pub prompts: Option<MultiPrompt>,
}

/// Where to listen and what a request may ask for.
#[derive(Debug, Clone)]
pub struct Options {
    pub host: IpAddr,
    pub port: u16,
    /// When set, every route but /health wants `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    pub limits: Limits,
    /// The most sequences one request may ask for (`n`).
    pub max_n: usize,
    /// The largest request body, in bytes (413 past it).
    pub max_body_bytes: usize,
    /// The most alternatives per token `logprobs` may ask for.
    pub max_logprobs: usize,
    pub connections: Connections,
}

struct AppState {
    models: Models,
    intake: Arc<Intake>,
    metrics: Metrics,
    options: Options,
    eos: Option<i64>,
    started: u64,
}

/// Serves until Ctrl-C or SIGTERM, then stops taking connections, finishes the requests in flight and returns.
/// `ready` hears the address once the server listens.
pub fn serve(served: Served, options: Options, ready: impl FnOnce(SocketAddr)) -> Result<()> {
    let Served { base, model, tokenizer, prompts } = served;
    let formats = match &prompts {
        Some(multi) => {
            multi.keys().map(|k| Ok((k.to_string(), multi.get(k)?.format().clone()))).collect::<Result<_>>()?
        }
        None => Vec::new(),
    };
    let (window, vocab) = (model.config().n_positions as usize, model.config().vocab_size);
    let eos = tokenizer.special().eos.map(i64::from);
    let models = Models::new(base, tokenizer.clone(), formats, window, vocab);
    let metrics = Metrics::default();
    let engine = Engine::start(model, tokenizer, prompts, options.limits, metrics.clone())?;
    let started = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let state =
        Arc::new(AppState { models, intake: engine.intake.clone(), metrics, options: options.clone(), eos, started });
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let served = runtime.block_on(async {
        let address = SocketAddr::new(options.host, options.port);
        let listener =
            tokio::net::TcpListener::bind(address).await.with_context(|| format!("cannot listen on {address}"))?;
        ready(listener.local_addr()?);
        accept(listener, router(state), options.connections).await.context("serving")
    });
    // Streams still held by the runtime end with it; then the decoding thread finishes and stops.
    drop(runtime);
    engine.join()?;
    served
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/tokenizer_info", get(tokenizer_info))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .fallback(|request: Request| async move {
            ApiError::with_status(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route {} {}", request.method(), request.uri().path()),
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .layer(DefaultBodyLimit::max(state.options.max_body_bytes))
        .layer(CatchPanicLayer::custom(|panic: Box<dyn std::any::Any + Send>| {
            let what =
                panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            ApiError::internal(format!("the server failed on this request: {}", what.unwrap_or_default()))
                .into_response()
        }))
        .with_state(state)
}

async fn authorize(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Some(key) = &state.options.api_key {
        let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let given = given.and_then(bearer_token);
        let matches = given
            .is_some_and(|g| g.len() == key.len() && g.bytes().zip(key.bytes()).fold(0, |d, (a, b)| d | (a ^ b)) == 0);
        if !matches {
            let message = match given {
                None => "no API key: send it as `Authorization: Bearer <key>`",
                Some(_) => "incorrect API key",
            };
            return ApiError::with_status(StatusCode::UNAUTHORIZED, "invalid_api_key", message).into_response();
        }
    }
    next.run(request).await
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive (RFC 7235), and the
/// space after it may be several.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once([' ', '\t'])?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim_start())
}

/// Counts every answer by route and status.
async fn count(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = match request.uri().path() {
        p @ ("/v1/models" | "/v1/completions" | "/tokenizer_info" | "/tokenize" | "/detokenize" | "/metrics"
        | "/health") => p.to_string(),
        _ => "other".to_string(),
    };
    let response = next.run(request).await;
    state.metrics.answered(&route, response.status().as_u16());
    response
}

async fn list_models(State(state): State<Arc<AppState>>) -> Json<Value> {
    let base = &state.models.base;
    let data: Vec<Value> = state
        .models
        .ids()
        .map(|id| {
            let parent = (id != base).then_some(base);
            json!({"id": id, "object": "model", "created": state.started, "owned_by": "ruprompts", "root": base, "parent": parent})
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.render())
        .into_response()
}

/// vLLM's tokenizer routes, which lm-evaluation-harness reads instead of loading the tokenizer itself.
async fn tokenizer_info(State(state): State<Arc<AppState>>) -> Json<Value> {
    let tokenizer = &state.models.tokenizer;
    let name = |id: Option<u32>| id.and_then(|id| tokenizer.id_to_token(id));
    let special = tokenizer.special();
    Json(json!({
        "eos_token": name(special.eos),
        "bos_token": name(special.bos),
        "pad_token": name(special.pad),
        "model_max_length": state.models.window,
    }))
}

#[derive(Deserialize)]
struct TokenizeRequest {
    prompt: String,
}

#[derive(Deserialize)]
struct DetokenizeRequest {
    tokens: Vec<i64>,
}

async fn tokenize(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let request: TokenizeRequest = match parse(body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match state.models.tokenizer.encode_sequence_ids(&request.prompt) {
        Ok(tokens) => {
            Json(json!({"count": tokens.len(), "max_model_len": state.models.window, "tokens": tokens})).into_response()
        }
        Err(e) => ApiError::invalid(Some("prompt"), format!("{e:#}")).into_response(),
    }
}

async fn detokenize(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let request: DetokenizeRequest = match parse(body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match state.models.tokenizer.decode(&request.tokens) {
        Ok(text) => Json(json!({"prompt": text})).into_response(),
        Err(e) => ApiError::invalid(Some("tokens"), format!("{e:#}")).into_response(),
    }
}

/// A JSON body, or the error saying where it is wrong (413 past the size limit).
fn parse<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
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
struct Plan {
    model: String,
    prompts: Vec<Prepared>,
    config: GenerationConfig,
    logprobs: Option<usize>,
    echo: bool,
    stream: bool,
    include_usage: bool,
    /// Answered in the chat API's shape (`/v1/chat/completions`).
    chat: bool,
}

impl AppState {
    /// Checks a completion request; with `messages` (a chat request) they make the one prompt.
    fn plan(&self, r: CompletionRequest, messages: Option<Vec<Value>>) -> Result<Plan, ApiError> {
        self.models.check(&r.model)?;
        let n = r.n.unwrap_or(1);
        if n == 0 || n > self.options.max_n {
            return Err(ApiError::invalid(
                Some("n"),
                format!("n is {n}; this server takes 1 to {} (--max-n)", self.options.max_n),
            ));
        }
        if r.best_of.is_some_and(|b| b != n) {
            return Err(ApiError::invalid(
                Some("best_of"),
                "best_of other than n is not supported; num_beams ranks beams",
            ));
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
        let stop_strings = match r.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
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
            bad_words: r.bad_words.unwrap_or_default(),
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
        let chat = messages.is_some();
        let prepared = match messages {
            Some(messages) => vec![self.models.prepare_chat(&r.model, &messages, r.fields.as_ref())?],
            None => {
                let inputs = r.prompt.inputs();
                if inputs.is_empty() {
                    return Err(ApiError::invalid(Some("prompt"), "the prompt list is empty"));
                }
                inputs
                    .iter()
                    .map(|input| self.models.prepare(&r.model, input, r.fields.as_ref()))
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        let window = self.models.window;
        let mut prompts = Vec::with_capacity(prepared.len());
        for prepared in prepared {
            let asked = prepared.ids.len().saturating_add(config.max_new_tokens);
            if asked > window {
                let param = if prepared.ids.len() >= window { "prompt" } else { "max_tokens" };
                return Err(ApiError::invalid(
                    Some(param),
                    format!(
                        "this model's maximum context length is {window} tokens, however you requested {asked} tokens \
                         ({} in your prompt; {} for the completion); reduce your prompt or max_tokens",
                        prepared.ids.len(),
                        config.max_new_tokens
                    ),
                ));
            }
            prompts.push(prepared);
        }
        Ok(Plan {
            model: r.model,
            prompts,
            config,
            logprobs: r.logprobs,
            echo: r.echo.unwrap_or(false),
            stream,
            include_usage: r.stream_options.is_some_and(|o| o.include_usage),
            chat,
        })
    }

    /// Queues one job per prompt; each answers on its own channel. A request larger than the queue is a 400; one
    /// that finds the queue full a 429 with Retry-After (OpenAI's clients wait and retry it).
    fn submit(&self, plan: &Plan) -> Result<Vec<UnboundedReceiver<Event>>, ApiError> {
        let jobs = plan
            .prompts
            .iter()
            .map(|p| Job {
                input: p.ids.clone(),
                config: plan.config.clone(),
                logprobs: plan.logprobs,
                echo: plan.echo.then(|| p.own.clone()),
            })
            .collect();
        self.intake.submit(jobs).map_err(|refused| match refused {
            Refused::TooLarge { rows, max } => ApiError::invalid(
                Some(if plan.prompts.len() > 1 { "prompt" } else { "n" }),
                format!(
                    "this request asks for {rows} sequences ({} prompts, {} each); this server queues at most {max} \
                     (--max-queue): send it in parts",
                    plan.prompts.len(),
                    rows / plan.prompts.len().max(1)
                ),
            ),
            Refused::Busy { waiting, max } => ApiError::busy(format!(
                "the server is busy: {waiting} sequences wait already and it queues at most {max}; retry shortly"
            )),
            Refused::Stopped => ApiError::internal("the decoding thread has stopped"),
        })
    }
}

async fn completions(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    match parse::<CompletionRequest>(body).and_then(|r| state.plan(r, None)) {
        Ok(plan) => answer(state, plan, started).await,
        Err(e) => e.into_response(),
    }
}

async fn chat_completions(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let planned = parse::<ChatRequest>(body).and_then(|r| {
        let (request, messages) = r.split();
        state.plan(request, Some(messages))
    });
    match planned {
        Ok(plan) => answer(state, plan, started).await,
        Err(e) => e.into_response(),
    }
}

/// Decodes a checked request and answers it, whole or streamed.
async fn answer(state: Arc<AppState>, plan: Plan, started: Instant) -> Response {
    let receivers = match state.submit(&plan) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let prompt_tokens: usize = plan.prompts.iter().map(|p| p.ids.len()).sum();
    state.metrics.prompt_tokens.inc_by(prompt_tokens as u64);
    let answer = Answer::new(&state, plan);
    if answer.plan.stream {
        return stream(state, answer, receivers, started);
    }
    let mut answer = answer;
    let mut events: StreamMap<usize, UnboundedReceiverStream<Event>> =
        receivers.into_iter().map(UnboundedReceiverStream::new).enumerate().collect();
    while let Some((prompt, event)) = events.next().await {
        if let Err(e) = answer.hear(prompt, event) {
            return e.into_response();
        }
    }
    let response = match answer.finish() {
        Ok(completion) => Json(completion).into_response(),
        Err(e) => e.into_response(),
    };
    state.metrics.latency.observe(started.elapsed().as_secs_f64());
    response
}

/// Streams the answer as server-sent events: a chunk per new piece of text (text that a stop string or an
/// unfinished character may still change is held back), a last chunk per choice with its finish reason, the
/// usage when asked, then `[DONE]`. A client that goes away drops the stream, and with it its rows.
fn stream(
    state: Arc<AppState>,
    mut answer: Answer,
    receivers: Vec<UnboundedReceiver<Event>>,
    started: Instant,
) -> Response {
    // A short buffer, so a client that went away is noticed within a few tokens.
    let (out, body) = tokio::sync::mpsc::channel::<Result<SseEvent, Infallible>>(4);
    tokio::spawn(async move {
        let send = |value: Value| {
            let out = out.clone();
            async move { out.send(Ok(SseEvent::default().data(value.to_string()))).await.is_ok() }
        };
        for chunk in answer.opening() {
            if !send(chunk).await {
                return;
            }
        }
        let mut events: StreamMap<usize, UnboundedReceiverStream<Event>> =
            receivers.into_iter().map(UnboundedReceiverStream::new).enumerate().collect();
        while let Some((prompt, event)) = events.next().await {
            let chunks = match answer.hear(prompt, event) {
                Ok(chunks) => chunks,
                Err(e) => {
                    let _ = send(e.body()).await;
                    return;
                }
            };
            for chunk in chunks {
                if !send(chunk).await {
                    return;
                }
            }
        }
        if let Err(e) = answer.check_finished() {
            let _ = send(e.body()).await;
            return;
        }
        if answer.plan.include_usage {
            let usage = answer.usage();
            let _ = send(answer.chunk(Vec::new(), Some(usage))).await;
        }
        let _ = out.send(Ok(SseEvent::default().data("[DONE]"))).await;
        state.metrics.latency.observe(started.elapsed().as_secs_f64());
    });
    Sse::new(ReceiverStream::new(body)).into_response()
}

/// One sequence as it grows.
#[derive(Default)]
struct Sequence {
    ids: Vec<i64>,
    logprobs: Vec<Option<TokenLogprobs>>,
    echo: Vec<(i64, Option<TokenLogprobs>)>,
    finished: Option<&'static str>,
    /// Bytes of the text already streamed.
    sent: usize,
}

/// A request's answer, assembled from its jobs' updates.
struct Answer {
    id: String,
    created: u64,
    plan: Plan,
    tokenizer: Tokenizer,
    sequences: Vec<Sequence>,
}

impl Answer {
    fn new(state: &AppState, plan: Plan) -> Self {
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let kind = if plan.chat { "chatcmpl" } else { "cmpl" };
        let id = format!("{kind}-{:x}{:x}", created, rand::random::<u64>());
        let sequences =
            (0..plan.prompts.len() * plan.config.num_return_sequences).map(|_| Sequence::default()).collect();
        Self { id, created, tokenizer: state.models.tokenizer.clone(), plan, sequences }
    }

    fn n(&self) -> usize {
        self.plan.config.num_return_sequences
    }

    /// Takes one update of prompt `prompt`'s job; returns the stream chunks it makes.
    fn hear(&mut self, prompt: usize, event: Event) -> Result<Vec<Value>, ApiError> {
        let update = match event {
            Event::Update(u) => u,
            Event::Failed(message) => return Err(ApiError::internal(message)),
        };
        let n = self.n();
        match update {
            Update::Echo(tokens) => {
                (0..n).for_each(|s| self.sequences[prompt * n + s].echo = tokens.clone());
                Ok(if self.plan.stream {
                    (0..n).map(|s| self.echo_chunk(prompt * n + s)).collect()
                } else {
                    Vec::new()
                })
            }
            Update::Token { seq, id, logprobs } => {
                let index = prompt * n + seq;
                let s = &mut self.sequences[index];
                s.ids.push(id);
                s.logprobs.push(logprobs);
                Ok(if self.plan.stream { self.delta(index, None)?.into_iter().collect() } else { Vec::new() })
            }
            Update::Finished { seq, stopped } => {
                let index = prompt * n + seq;
                self.sequences[index].finished = Some(if stopped { "stop" } else { "length" });
                Ok(if self.plan.stream {
                    self.delta(index, self.sequences[index].finished)?.into_iter().collect()
                } else {
                    Vec::new()
                })
            }
        }
    }

    /// What sequence `index` says: its new tokens without eos as text after its prompt, cut before a stop string.
    fn completion(&self, index: usize) -> Result<String, ApiError> {
        let ids: Vec<i64> =
            self.sequences[index].ids.iter().copied().filter(|&t| Some(t) != self.plan.config.eos_token_id).collect();
        let input = &self.plan.prompts[index / self.n()].ids;
        let text = self.tokenizer.decode_after(input, &ids).map_err(|e| ApiError::internal(format!("{e:#}")))?;
        Ok(cut_at_stop(&text, &self.plan.config.stop_strings).to_string())
    }

    /// The chunks that open a stream: a chat's assistant role, or with `echo` but no logprobs, each choice's prompt
    /// text.
    fn opening(&self) -> Vec<Value> {
        if self.plan.chat {
            return (0..self.sequences.len())
                .map(|i| self.chunk(vec![self.choice_piece(i, String::new(), None, None)], None))
                .collect();
        }
        if !self.plan.echo || self.plan.logprobs.is_some() {
            return Vec::new();
        }
        (0..self.sequences.len())
            .map(|i| {
                json!(self
                    .chunk(vec![self.choice_piece(i, self.plan.prompts[i / self.n()].text.clone(), None, None)], None))
            })
            .collect()
    }

    /// The echo chunk of sequence `index`: the prompt's text and its tokens' log-probabilities.
    fn echo_chunk(&self, index: usize) -> Value {
        let prompt = &self.plan.prompts[index / self.n()];
        let logprobs = self.logprobs_of(&self.sequences[index].echo, 0);
        self.chunk(vec![self.choice_piece(index, prompt.text.clone(), Some(logprobs), None)], None)
    }

    /// The next piece of sequence `index`'s text (all of it once `finished`), with the newest token's
    /// log-probabilities.
    fn delta(&mut self, index: usize, finished: Option<&'static str>) -> Result<Option<Value>, ApiError> {
        let text = self.completion(index)?;
        let end = if finished.is_some() { text.len() } else { settled(&text, &self.plan.config.stop_strings) };
        let s = &self.sequences[index];
        let piece = text.get(s.sent..end).unwrap_or_default().to_string();
        let logprobs = match (self.plan.logprobs, finished) {
            (Some(_), None) => {
                let last = s.ids.len() - 1;
                let offset = text.get(..s.sent).map_or(0, |t| t.chars().count());
                Some(self.logprobs_of(&[(s.ids[last], s.logprobs[last].clone())], offset))
            }
            _ => None,
        };
        if piece.is_empty() && logprobs.is_none() && finished.is_none() {
            return Ok(None);
        }
        self.sequences[index].sent = end.max(self.sequences[index].sent);
        Ok(Some(self.chunk(vec![self.choice_piece(index, piece, logprobs, finished)], None)))
    }

    fn choice_piece(
        &self,
        index: usize,
        text: String,
        logprobs: Option<Logprobs>,
        finish: Option<&'static str>,
    ) -> Choice {
        Choice { text, index, logprobs, finish_reason: finish }
    }

    /// A streamed chunk, in the shape of the request's API.
    fn chunk(&self, choices: Vec<Choice>, usage: Option<Usage>) -> Value {
        self.shaped(self.completion_of(choices, usage), true)
    }

    fn completion_of(&self, choices: Vec<Choice>, usage: Option<Usage>) -> Completion {
        Completion {
            id: self.id.clone(),
            object: "text_completion",
            created: self.created,
            model: self.plan.model.clone(),
            choices,
            usage,
        }
    }

    /// `c` as the completions API writes it, or as the chat API does: each choice's text as the assistant's
    /// `message` (a `delta` when `streamed`), and log-probabilities as `content` entries with their UTF-8 bytes
    /// and the most likely alternatives, best first.
    fn shaped(&self, c: Completion, streamed: bool) -> Value {
        if !self.plan.chat {
            return json!(c);
        }
        let entry =
            |token: &str, logprob: Option<f32>| json!({"token": token, "logprob": logprob, "bytes": token.as_bytes()});
        let choices: Vec<Value> = c
            .choices
            .into_iter()
            .map(|choice| {
                let logprobs = choice.logprobs.map(|lp| {
                    let content: Vec<Value> = (0..lp.tokens.len())
                        .map(|i| {
                            let top = lp.top_list[i].iter().take(self.plan.logprobs.unwrap_or(0));
                            let mut e = entry(&lp.tokens[i], lp.token_logprobs[i]);
                            e["top_logprobs"] = top.map(|(t, v)| entry(t, Some(*v))).collect();
                            e
                        })
                        .collect();
                    json!({ "content": content })
                });
                let message = json!({"role": "assistant", "content": choice.text});
                let mut out =
                    json!({"index": choice.index, "logprobs": logprobs, "finish_reason": choice.finish_reason});
                out[if streamed { "delta" } else { "message" }] = message;
                out
            })
            .collect();
        let object = if streamed { "chat.completion.chunk" } else { "chat.completion" };
        let mut out = json!({"id": c.id, "object": object, "created": c.created, "model": c.model, "choices": choices});
        if let Some(usage) = c.usage {
            out["usage"] = json!(usage);
        }
        out
    }

    /// OpenAI's logprobs of `tokens`, their text offsets counted from `offset`.
    fn logprobs_of(&self, tokens: &[(i64, Option<TokenLogprobs>)], offset: usize) -> Logprobs {
        let text = |id: i64| self.tokenizer.decode_token(id).unwrap_or_default();
        let mut out = Logprobs::default();
        let mut at = offset;
        for (id, lp) in tokens {
            let token = text(*id);
            out.text_offset.push(at);
            at += token.chars().count();
            out.tokens.push(token);
            out.token_logprobs.push(lp.as_ref().map(|l| l.logprob));
            out.top_list
                .push(lp.as_ref().map_or_else(Vec::new, |l| l.top.iter().map(|&(t, v)| (text(t), v)).collect()));
            out.top_logprobs.push(lp.as_ref().map(|l| {
                let mut top = Map::new();
                for &(t, v) in &l.top {
                    top.entry(text(t)).or_insert(json!(v));
                }
                // The chosen token is always listed, as OpenAI lists it.
                top.entry(text(*id)).or_insert(json!(l.logprob));
                top
            }));
        }
        out
    }

    fn check_finished(&self) -> Result<(), ApiError> {
        match self.sequences.iter().all(|s| s.finished.is_some()) {
            true => Ok(()),
            false => Err(ApiError::internal("decoding stopped before this request was done")),
        }
    }

    fn usage(&self) -> Usage {
        let prompt_tokens = self.plan.prompts.iter().map(|p| p.ids.len()).sum();
        let completion_tokens = self.sequences.iter().map(|s| s.ids.len()).sum();
        Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens }
    }

    /// The whole answer.
    fn finish(self) -> Result<Value, ApiError> {
        self.check_finished()?;
        let mut choices = Vec::with_capacity(self.sequences.len());
        for (index, s) in self.sequences.iter().enumerate() {
            let prompt = &self.plan.prompts[index / self.n()];
            let completion = self.completion(index)?;
            let logprobs = self.plan.logprobs.map(|_| {
                // The echoed tokens, then the generated ones after the prompt's text.
                let start = if self.plan.echo { prompt.text.chars().count() } else { 0 };
                let generated: Vec<(i64, Option<TokenLogprobs>)> =
                    s.ids.iter().copied().zip(s.logprobs.iter().cloned()).collect();
                let mut lp = self.logprobs_of(&s.echo, 0);
                lp.append(self.logprobs_of(&generated, start));
                lp
            });
            let text = if self.plan.echo { format!("{}{completion}", prompt.text) } else { completion };
            choices.push(Choice { text, index, logprobs, finish_reason: s.finished });
        }
        let usage = Some(self.usage());
        Ok(self.shaped(self.completion_of(choices, usage), false))
    }
}
