//! The HTTP side: the server's start and stop, its routes and middleware (bearer keys, counting, body limit,
//! panics as 500s), and the small routes; completions go through `check`, the decoding thread and `answer`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;
use tower_http::catch_panic::CatchPanicLayer;

use super::answer::respond;
use super::api::{ApiError, ChatRequest, CompletionRequest};
use super::auth;
use super::check::{self, parse, Plan, Server};
use super::engine::{Engine, Event, Intake, Refused};
use super::inputs::Models;
use super::listen::accept;
use super::metrics::Metrics;
use super::options::Options;
use crate::generate::Job;
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
        if let Err(e) = auth::check_key(key, given) {
            return e.into_response();
        }
    }
    next.run(request).await
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

impl AppState {
    /// What checking a request needs.
    fn server(&self) -> Server<'_> {
        Server { models: &self.models, options: &self.options, eos: self.eos }
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
    match parse::<CompletionRequest>(body).and_then(|r| check::plan(&state.server(), r, None)) {
        Ok(plan) => answer(state, plan, started).await,
        Err(e) => e.into_response(),
    }
}

async fn chat_completions(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let planned = parse::<ChatRequest>(body).and_then(|r| {
        let (request, messages) = r.split();
        check::plan(&state.server(), request, Some(messages))
    });
    match planned {
        Ok(plan) => answer(state, plan, started).await,
        Err(e) => e.into_response(),
    }
}

/// Queues a checked request's jobs and answers it, whole or streamed.
async fn answer(state: Arc<AppState>, plan: Plan, started: Instant) -> Response {
    let receivers = match state.submit(&plan) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let prompt_tokens: usize = plan.prompts.iter().map(|p| p.ids.len()).sum();
    state.metrics.prompt_tokens.inc_by(prompt_tokens as u64);
    respond(plan, state.models.tokenizer.clone(), receivers, state.metrics.clone(), started).await
}
