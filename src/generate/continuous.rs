//! Continuous batching: jobs join a running batch between decoding steps and leave it when done. A joining
//! group is read once (prompts injected) into a KV cache of its own, which is appended to the running cache
//! right-aligned; then every step feeds one token per row. Each job keeps its own logits processors, sampling
//! streams and stop rules, and position ids come from the attention mask, so what a job gets never depends on
//! the jobs decoded beside it.

use std::ops::Range;

use anyhow::{ensure, Result};
use tch::{Kind, Tensor};

use super::batch::histories;
use super::logits::{next_tokens, Processors, Row, Streams};
use super::stops::Stops;
use super::GenerationConfig;
use crate::model::{pad, Input, KvCache, Model, Side};
use crate::prompt::{inject, Injection};
use crate::tokenizer::Tokenizer;

/// One request to decode: `num_return_sequences` sequences continue `input` (greedy or sampled; beam search
/// settles its outputs only at the end and goes through [`super::generate`]).
#[derive(Debug, Clone)]
pub struct Job {
    pub input: Vec<i64>,
    pub config: GenerationConfig,
    /// Report each new token's log-probability and this many most likely tokens' (`None`: report none).
    pub logprobs: Option<usize>,
    /// With `logprobs`, also report these input tokens (the request's own, not a format's around them) with their
    /// log-probabilities.
    pub echo: Option<Range<usize>>,
}

/// How likely the model found a token (its raw log-probability, before processors and temperature), and its
/// most likely tokens with theirs.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    pub logprob: f32,
    pub top: Vec<(i64, f32)>,
}

/// What a job hears.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// The echoed input tokens; the input's first token has no log-probability.
    Echo(Vec<(i64, Option<TokenLogprobs>)>),
    /// Sequence `seq` got a token.
    Token { seq: usize, id: i64, logprobs: Option<TokenLogprobs> },
    /// Sequence `seq` ended: on eos or a stop string (`stopped`), else at max_new_tokens.
    Finished { seq: usize, stopped: bool },
}

/// A job in the running batch: its rows are consecutive, one per sequence.
struct Active<K> {
    key: K,
    job: Job,
    processors: Processors,
    streams: Streams,
    new: Vec<Vec<i64>>,
    finished: Vec<bool>,
}

/// The running batch.
pub struct Batcher<'a, K> {
    model: &'a Model,
    tokenizer: &'a Tokenizer,
    injections: &'a [Injection<'a>],
    cache: KvCache,
    /// `[rows, cached positions]`, 1 = real token.
    mask: Option<Tensor>,
    /// Each row's token the next step feeds.
    pending: Vec<i64>,
    jobs: Vec<Active<K>>,
}

impl<'a, K: Clone + PartialEq> Batcher<'a, K> {
    pub fn new(model: &'a Model, tokenizer: &'a Tokenizer, injections: &'a [Injection<'a>]) -> Self {
        Self {
            model,
            tokenizer,
            injections,
            cache: model.new_cache(),
            mask: None,
            pending: Vec::new(),
            jobs: Vec::new(),
        }
    }

    /// Rows being decoded.
    pub fn rows(&self) -> usize {
        self.pending.len()
    }

    /// Keys of the jobs being decoded.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.jobs.iter().map(|a| &a.key)
    }

    /// Reads `jobs` in one forward and gives each its first token (or, with max_new_tokens 0, its echo alone);
    /// those still decoding join the batch. On an error nothing joins and the running batch is as it was.
    pub fn admit(&mut self, jobs: Vec<(K, Job)>) -> Result<Vec<(K, Vec<Update>)>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let window = self.model.config().n_positions;
        let vocab = self.model.config().vocab_size;
        for (_, job) in &jobs {
            ensure!(!job.input.is_empty(), "an input is empty: generation needs at least one token");
            if let Some(echo) = &job.echo {
                let tokens = job.input.get(echo.clone()).unwrap_or_default();
                ensure!(
                    tokens.len() == echo.len() && tokens.iter().all(|t| (0..vocab).contains(t)),
                    "echoed tokens {echo:?} are not model tokens of the {}-token input",
                    job.input.len()
                );
            }
            ensure!(job.config.num_beams == 1, "beam search does not decode in a running batch");
            ensure!(
                (job.input.len() + job.config.max_new_tokens) as i64 <= window,
                "{} input tokens and {} new ones do not fit the model's {window} positions",
                job.input.len(),
                job.config.max_new_tokens
            );
        }
        let _guard = tch::no_grad_guard();
        let device = self.model.device();
        let inputs: Vec<&[i64]> = jobs.iter().map(|(_, j)| j.input.as_slice()).collect();
        let (ids, mask) = pad(&inputs, 0, Side::Left);
        let (ids, mask) = (ids.to_device(device), mask.to_device(device));
        let width = ids.size()[1];
        let embeds = inject(self.model, &ids, self.injections)?;
        let echo = jobs.iter().any(|(_, j)| j.logprobs.is_some() && j.echo.is_some());
        let mut cache = self.model.new_cache();
        let from = if echo { 0 } else { width - 1 };
        let hidden = self.model.forward_from(embeds.input(), Some(&mask), Some(&mut cache), from)?;
        let last = self.model.next_token_logits(&hidden.select(1, hidden.size()[1] - 1));
        let mut updates = Vec::with_capacity(jobs.len());
        let mut joining = Vec::new();
        let (mut rows, mut pending) = (Vec::new(), Vec::new());
        for (j, (key, job)) in jobs.into_iter().enumerate() {
            let mut heard = Vec::new();
            if let (Some(k), Some(range)) = (job.logprobs, job.echo.clone()) {
                let padding = width - job.input.len() as i64;
                heard.push(Update::Echo(self.echo(&hidden.get(j as i64), padding, &job.input, range, k)?));
            }
            let n = job.config.num_return_sequences;
            if job.config.max_new_tokens == 0 {
                heard.extend((0..n).map(|seq| Update::Finished { seq, stopped: false }));
                updates.push((key, heard));
                continue;
            }
            let mut active = Active {
                processors: Processors::new(&job.config, self.tokenizer, vocab)?,
                streams: Streams::new(job.config.seed, 1, n),
                new: vec![Vec::new(); n],
                finished: vec![false; n],
                key: key.clone(),
                job,
            };
            let logits = last.narrow(0, j as i64, 1).repeat([n as i64, 1]);
            let next = choose(&mut active, &logits, self.tokenizer, &mut heard)?;
            updates.push((key, heard));
            // A job whose every sequence ended on its first token is done without joining.
            if !active.finished.iter().all(|&f| f) {
                rows.extend(std::iter::repeat_n(j as i64, n));
                pending.extend(next);
                joining.push(active);
            }
        }
        if !rows.is_empty() {
            let cache = cache.select_rows(&rows);
            let mask = mask.index_select(0, &Tensor::from_slice(&rows).to_device(device));
            self.cache.extend_rows(&cache);
            self.mask = Some(match self.mask.take() {
                None => mask,
                Some(running) => {
                    let widest = running.size()[1].max(mask.size()[1]);
                    Tensor::cat(&[left_pad(&running, widest), left_pad(&mask, widest)], 0)
                }
            });
            self.pending.extend(pending);
            self.jobs.extend(joining);
        }
        Ok(updates)
    }

    /// One token for every row; jobs whose sequences have all ended leave the batch.
    pub fn step(&mut self) -> Result<Vec<(K, Vec<Update>)>> {
        let Some(mask) = self.mask.as_ref() else { return Ok(Vec::new()) };
        let _guard = tch::no_grad_guard();
        let device = self.model.device();
        let mask = Tensor::cat(&[mask, &mask.ones_like().narrow(1, 0, 1)], 1);
        let next = Tensor::from_slice(&self.pending).unsqueeze(1).to_device(device);
        let embeds = self.model.embed(&next)?;
        let hidden = self.model.forward(Input::Embeds(&embeds), Some(&mask), Some(&mut self.cache))?;
        self.mask = Some(mask);
        let logits = self.model.next_token_logits(&hidden.select(1, 0));
        let mut updates = Vec::with_capacity(self.jobs.len());
        let mut start = 0;
        for active in &mut self.jobs {
            let n = active.new.len();
            let mut heard = Vec::new();
            let next = choose(active, &logits.narrow(0, start as i64, n as i64), self.tokenizer, &mut heard)?;
            self.pending[start..start + n].copy_from_slice(&next);
            start += n;
            updates.push((active.key.clone(), heard));
        }
        let done: Vec<K> = self.jobs.iter().filter(|a| a.finished.iter().all(|&f| f)).map(|a| a.key.clone()).collect();
        self.remove(&done);
        Ok(updates)
    }

    /// Takes the jobs `keys` out of the batch (done, or their client went away); the cache keeps only the other
    /// rows, and padding no row needs any more is dropped.
    pub fn remove(&mut self, keys: &[K]) {
        if keys.is_empty() {
            return;
        }
        let mut keep = Vec::new();
        let mut start = 0;
        for active in &self.jobs {
            let n = active.new.len();
            if !keys.contains(&active.key) {
                keep.extend(start as i64..(start + n) as i64);
            }
            start += n;
        }
        self.jobs.retain(|a| !keys.contains(&a.key));
        if keep.is_empty() {
            self.cache = self.model.new_cache();
            self.mask = None;
            self.pending.clear();
            return;
        }
        self.pending = keep.iter().map(|&r| self.pending[r as usize]).collect();
        self.cache.reorder(&keep);
        let mask = self.mask.take().expect("rows are decoding");
        let mask = mask.index_select(0, &Tensor::from_slice(&keep).to_device(mask.device()));
        let used = Vec::<i64>::try_from(mask.sum_dim_intlist(0, false, Kind::Int64)).unwrap_or_default();
        let unused = used.iter().take_while(|&&c| c == 0).count() as i64;
        self.cache.drop_front(unused);
        self.mask = Some(mask.narrow(1, unused, mask.size()[1] - unused));
    }

    /// Log-probabilities of `input[range]` from one row's hidden states `[width, d]` (`padding` positions
    /// first), each with the `k` most likely tokens at its position.
    fn echo(
        &self,
        hidden: &Tensor,
        padding: i64,
        input: &[i64],
        range: Range<usize>,
        k: usize,
    ) -> Result<Vec<(i64, Option<TokenLogprobs>)>> {
        let mut out: Vec<(i64, Option<TokenLogprobs>)> = Vec::new();
        if range.start == 0 && !range.is_empty() {
            out.push((input[0], None));
        }
        let first = range.start.max(1);
        if first < range.end {
            let count = (range.end - first) as i64;
            let states = hidden.narrow(0, padding + first as i64 - 1, count);
            let logprobs = self.model.lm_logits(&states).log_softmax(-1, Kind::Float);
            let tokens = &input[first..range.end];
            out.extend(tokens.iter().copied().zip(token_logprobs(&logprobs, tokens, k)?.into_iter().map(Some)));
        }
        Ok(out)
    }
}

/// `mask` `[rows, w]` padded with zeros on the left to `width` columns.
fn left_pad(mask: &Tensor, width: i64) -> Tensor {
    let extra = width - mask.size()[1];
    if extra == 0 {
        return mask.shallow_clone();
    }
    Tensor::cat(&[&mask.zeros_like().narrow(1, 0, 1).expand([-1, extra], false), mask], 1)
}

/// Each row's chosen token's log-probability in `logprobs: [rows, V]` and its `k` most likely tokens'.
fn token_logprobs(logprobs: &Tensor, chosen: &[i64], k: usize) -> Result<Vec<TokenLogprobs>> {
    let picked = logprobs.gather(1, &Tensor::from_slice(chosen).to_device(logprobs.device()).unsqueeze(1), false);
    let picked = Vec::<f32>::try_from(picked.squeeze_dim(1).to_device(tch::Device::Cpu))?;
    let (values, indices) = logprobs.topk(k as i64, -1, true, true);
    let values = Vec::<f32>::try_from(values.reshape([-1]).to_device(tch::Device::Cpu))?;
    let indices = Vec::<i64>::try_from(indices.reshape([-1]).to_device(tch::Device::Cpu))?;
    Ok(picked
        .into_iter()
        .enumerate()
        .map(|(r, logprob)| {
            let top = (r * k..(r + 1) * k).map(|i| (indices[i], values[i])).collect();
            TokenLogprobs { logprob, top }
        })
        .collect())
}

/// The next token of each of `active`'s rows from their `logits: [rows, V]`, telling `heard` about the rows
/// still going; rows that end are marked finished.
fn choose<K>(
    active: &mut Active<K>,
    logits: &Tensor,
    tokenizer: &Tokenizer,
    heard: &mut Vec<Update>,
) -> Result<Vec<i64>> {
    let config = &active.job.config;
    let new: Vec<&[i64]> = active.new.iter().map(Vec::as_slice).collect();
    let inputs = vec![&active.job.input; new.len()];
    let tokens = histories(&inputs, &new);
    let states: Vec<Row> = tokens.iter().zip(&new).map(|(t, new)| Row { tokens: t, new: new.len() }).collect();
    let next = Vec::<i64>::try_from(next_tokens(logits, &states, &active.processors, config, &mut active.streams)?)?;
    let logprobs = match active.job.logprobs {
        Some(k) => Some(token_logprobs(&logits.log_softmax(-1, Kind::Float), &next, k)?),
        None => None,
    };
    let stops = Stops::new(tokenizer, config);
    for (seq, &id) in next.iter().enumerate() {
        if active.finished[seq] {
            continue;
        }
        active.new[seq].push(id);
        heard.push(Update::Token { seq, id, logprobs: logprobs.as_ref().map(|l| l[seq].clone()) });
        let stopped = stops.hit(&active.job.input, &active.new[seq])?;
        if stopped || active.new[seq].len() >= config.max_new_tokens {
            active.finished[seq] = true;
            heard.push(Update::Finished { seq, stopped });
        }
    }
    Ok(next)
}
