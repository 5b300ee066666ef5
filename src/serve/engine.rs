//! The decoding thread: it owns the model and the prompts, queues jobs as they come, lets them join the running
//! batch between steps while there is room (`--max-batch` rows, `--max-batch-tokens` tokens), and sends each
//! job its updates. A job whose client went away leaves the batch; a failure or panic while decoding fails the
//! jobs it touched and the thread goes on with an empty batch.

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{Receiver, Sender};
use std::thread::JoinHandle;

use anyhow::{anyhow, Result};
use tokio::sync::mpsc::UnboundedSender;

use super::metrics::Metrics;
use crate::generate::{generate, Batcher, Job, Update};
use crate::model::Model;
use crate::prompt::MultiPrompt;
use crate::tokenizer::Tokenizer;

/// How much decodes at once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Rows (sequences) in the running batch.
    pub max_batch: usize,
    /// Tokens the running batch may come to hold: each row's input and new tokens.
    pub max_batch_tokens: usize,
}

impl Limits {
    /// The batch room a job takes: its rows and the tokens they may come to hold.
    pub fn cost(job: &Job) -> (usize, usize) {
        let rows = job.config.num_return_sequences.max(job.config.num_beams);
        (rows, rows * (job.input.len() + job.config.max_new_tokens))
    }
}

/// What a job's client hears from the engine.
#[derive(Debug)]
pub enum Event {
    Update(Update),
    /// Decoding failed; the job is over.
    Failed(String),
}

/// A job and where its events go.
pub struct Submission {
    pub job: Job,
    pub events: UnboundedSender<Event>,
}

/// The decoding thread and the way in.
pub struct Engine {
    pub queue: Sender<Submission>,
    thread: JoinHandle<()>,
}

impl Engine {
    /// Starts the thread; it ends once every sender of `queue` is gone and its jobs are done.
    pub fn start(
        model: Model,
        tokenizer: Tokenizer,
        prompts: Option<MultiPrompt>,
        limits: Limits,
        metrics: Metrics,
    ) -> Result<Self> {
        let (queue, incoming) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ruprompts-decode".into())
            .spawn(move || run(&model, &tokenizer, prompts.as_ref(), limits, &metrics, incoming))?;
        Ok(Self { queue, thread })
    }

    /// Waits for the thread to finish its jobs (after every sender of `queue` is dropped).
    pub fn join(self) -> Result<()> {
        drop(self.queue);
        self.thread.join().map_err(|_| anyhow!("the decoding thread panicked"))
    }
}

/// A job in the batch.
struct Running {
    events: UnboundedSender<Event>,
    cost: (usize, usize),
}

fn run(
    model: &Model,
    tokenizer: &Tokenizer,
    prompts: Option<&MultiPrompt>,
    limits: Limits,
    metrics: &Metrics,
    incoming: Receiver<Submission>,
) {
    let injections = prompts.map(MultiPrompt::injections).unwrap_or_default();
    let mut batcher: Batcher<u64> = Batcher::new(model, tokenizer, &injections);
    let mut waiting: VecDeque<(u64, Submission)> = VecDeque::new();
    let mut running: HashMap<u64, Running> = HashMap::new();
    let mut next_key = 0u64;
    let mut closed = false;
    loop {
        // Block only when there is nothing to decode.
        if running.is_empty() && waiting.is_empty() {
            if closed {
                return;
            }
            match incoming.recv() {
                Ok(s) => {
                    waiting.push_back((next_key, s));
                    next_key += 1;
                }
                Err(_) => return,
            }
        }
        loop {
            match incoming.try_recv() {
                Ok(s) => {
                    waiting.push_back((next_key, s));
                    next_key += 1;
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        // Clients that went away: their rows are freed, their queued jobs dropped.
        let gone: Vec<u64> = running.iter().filter(|(_, r)| r.events.is_closed()).map(|(k, _)| *k).collect();
        batcher.remove(&gone);
        gone.iter().for_each(|k| drop(running.remove(k)));
        waiting.retain(|(_, s)| !s.events.is_closed());
        // Beam search settles its outputs only at the end: a beam job at the head of the queue decodes on its own.
        if waiting.front().is_some_and(|(_, s)| s.job.config.num_beams > 1) {
            let (_, s) = waiting.pop_front().expect("a front");
            beams(model, tokenizer, &injections, s, metrics);
            continue;
        }
        let (mut rows, mut tokens) = running.values().fold((0, 0), |(r, t), j| (r + j.cost.0, t + j.cost.1));
        let mut joining = Vec::new();
        while let Some((_, s)) = waiting.front() {
            let cost = Limits::cost(&s.job);
            let fits = rows + cost.0 <= limits.max_batch && tokens + cost.1 <= limits.max_batch_tokens;
            // A job larger than the limits alone still decodes, alone.
            if s.job.config.num_beams > 1 || !(fits || (running.is_empty() && joining.is_empty())) {
                break;
            }
            let (key, s) = waiting.pop_front().expect("a front");
            rows += cost.0;
            tokens += cost.1;
            joining.push((key, s, cost));
        }
        metrics.queue_length.set(waiting.len() as i64);
        if !joining.is_empty() {
            let jobs: Vec<(u64, Job)> = joining.iter().map(|(k, s, _)| (*k, s.job.clone())).collect();
            for (key, s, cost) in joining {
                running.insert(key, Running { events: s.events, cost });
            }
            let keys: Vec<u64> = jobs.iter().map(|(k, _)| *k).collect();
            match catch_unwind(AssertUnwindSafe(|| batcher.admit(jobs))) {
                Ok(Ok(updates)) => deliver(updates, &mut running, metrics),
                Ok(Err(e)) => fail(&keys, &format!("{e:#}"), &mut running),
                Err(panic) => fail(&keys, &panic_message(&panic), &mut running),
            }
            // Jobs that were done at once (max_tokens 0, an early stop) are not in the batch.
            let inside: Vec<u64> = batcher.keys().copied().collect();
            running.retain(|k, _| !keys.contains(k) || inside.contains(k));
        }
        if batcher.rows() > 0 {
            metrics.batch_rows.observe(batcher.rows() as f64);
            match catch_unwind(AssertUnwindSafe(|| batcher.step())) {
                Ok(Ok(updates)) => deliver(updates, &mut running, metrics),
                failure => {
                    let message = match failure {
                        Ok(Err(e)) => format!("{e:#}"),
                        Err(panic) => panic_message(&panic),
                        Ok(Ok(_)) => unreachable!("handled above"),
                    };
                    let keys: Vec<u64> = batcher.keys().copied().collect();
                    fail(&keys, &message, &mut running);
                    batcher = Batcher::new(model, tokenizer, &injections);
                }
            }
            let inside: Vec<u64> = batcher.keys().copied().collect();
            running.retain(|k, _| inside.contains(k));
        }
        metrics.running_rows.set(batcher.rows() as i64);
    }
}

/// Decodes one beam-search job by itself and sends its tokens and ends.
fn beams(
    model: &Model,
    tokenizer: &Tokenizer,
    injections: &[crate::prompt::Injection],
    s: Submission,
    metrics: &Metrics,
) {
    metrics.batch_rows.observe(s.job.config.num_beams as f64);
    let run = || generate(model, tokenizer, std::slice::from_ref(&s.job.input), injections, &s.job.config);
    let outputs = match catch_unwind(AssertUnwindSafe(run)) {
        Ok(Ok(mut outputs)) => outputs.remove(0),
        Ok(Err(e)) => return drop(s.events.send(Event::Failed(format!("{e:#}")))),
        Err(panic) => return drop(s.events.send(Event::Failed(panic_message(&panic)))),
    };
    let eos = s.job.config.eos_token_id;
    for (seq, g) in outputs.into_iter().enumerate() {
        let stopped =
            g.new_ids.last().is_some_and(|&t| Some(t) == eos) || g.new_ids.len() < s.job.config.max_new_tokens;
        for id in g.new_ids {
            metrics.completion_tokens.inc();
            let _ = s.events.send(Event::Update(Update::Token { seq, id, logprobs: None }));
        }
        let _ = s.events.send(Event::Update(Update::Finished { seq, stopped }));
    }
}

/// Sends each job its updates, counting the tokens generated.
fn deliver(updates: Vec<(u64, Vec<Update>)>, running: &mut HashMap<u64, Running>, metrics: &Metrics) {
    for (key, updates) in updates {
        if let Some(job) = running.get(&key) {
            for u in updates {
                if matches!(u, Update::Token { .. }) {
                    metrics.completion_tokens.inc();
                }
                // A client that went away is noticed before the next step.
                let _ = job.events.send(Event::Update(u));
            }
        }
    }
}

fn fail(keys: &[u64], message: &str, running: &mut HashMap<u64, Running>) {
    for key in keys {
        if let Some(job) = running.remove(key) {
            let _ = job.events.send(Event::Failed(message.to_string()));
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    // libtorch's messages carry a C++ backtrace after their first line.
    format!("decoding panicked: {}", what.lines().next().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::GenerationConfig;
    use tch::{Device, Kind};
    use tokio::sync::mpsc::unbounded_channel;

    /// The panic net catches what should never happen; here a job asking for more alternatives per token than
    /// the vocabulary has, which the HTTP side refuses before it gets this far.
    #[test]
    fn a_panic_while_decoding_fails_its_job_and_the_engine_goes_on() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-gpt2-ru");
        let model = Model::from_dir(&dir, Kind::Float, Device::Cpu).unwrap();
        let tokenizer = Tokenizer::from_dir(&dir).unwrap();
        let limits = Limits { max_batch: 8, max_batch_tokens: 10_000 };
        let engine = Engine::start(model, tokenizer, None, limits, Metrics::default()).unwrap();
        let job = |logprobs| Job {
            input: vec![5, 6, 7],
            config: GenerationConfig { max_new_tokens: 3, ..Default::default() },
            logprobs,
            echo: None,
        };
        let (events, mut heard) = unbounded_channel();
        engine.queue.send(Submission { job: job(Some(100_000)), events }).unwrap();
        match heard.blocking_recv() {
            Some(Event::Failed(message)) => assert!(message.starts_with("decoding panicked"), "{message}"),
            other => panic!("expected a failure, got {other:?}"),
        }
        let (events, mut heard) = unbounded_channel();
        engine.queue.send(Submission { job: job(None), events }).unwrap();
        let mut tokens = 0;
        while let Some(event) = heard.blocking_recv() {
            match event {
                Event::Update(Update::Token { .. }) => tokens += 1,
                Event::Failed(message) => panic!("{message}"),
                Event::Update(_) => {}
            }
        }
        assert_eq!(tokens, 3);
        engine.join().unwrap();
    }
}
