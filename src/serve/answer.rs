//! A request's answer assembled from its jobs' updates: whole, or streamed as server-sent events, in the shape of
//! the completions or the chat API.

use std::convert::Infallible;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tokio_stream::{StreamExt, StreamMap};

use super::api::{ApiError, Choice, Completion, Logprobs, Usage};
use super::check::Plan;
use super::engine::Event;
use super::metrics::Metrics;
use crate::generate::{cut_at_stop, settled, TokenLogprobs, Update};
use crate::tokenizer::Tokenizer;

/// Answers a queued request from its jobs' `receivers` (one per prompt), whole or streamed as `plan` says; the
/// time from `started` to the last byte goes into `metrics`.
pub async fn respond(
    plan: Plan,
    tokenizer: Tokenizer,
    receivers: Vec<UnboundedReceiver<Event>>,
    metrics: Metrics,
    started: Instant,
) -> Response {
    let mut answer = Answer::new(tokenizer, plan);
    if answer.plan.stream {
        return stream(metrics, answer, receivers, started);
    }
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
    metrics.latency.observe(started.elapsed().as_secs_f64());
    response
}

/// Streams the answer as server-sent events: a chunk per new piece of text (text that a stop string or an
/// unfinished character may still change is held back), a last chunk per choice with its finish reason, the
/// usage when asked, then `[DONE]`. A client that goes away drops the stream, and with it its rows.
fn stream(
    metrics: Metrics,
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
        metrics.latency.observe(started.elapsed().as_secs_f64());
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
    fn new(tokenizer: Tokenizer, plan: Plan) -> Self {
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let kind = if plan.chat { "chatcmpl" } else { "cmpl" };
        let id = format!("{kind}-{:x}{:x}", created, rand::random::<u64>());
        let sequences =
            (0..plan.prompts.len() * plan.config.num_return_sequences).map(|_| Sequence::default()).collect();
        Self { id, created, tokenizer, plan, sequences }
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
