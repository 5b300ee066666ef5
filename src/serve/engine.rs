//! The decoding thread: it owns the model and the prompts, queues jobs as they come, lets them join the running
//! batch between steps while there is room (`--max-batch` rows, `--max-batch-tokens` tokens), and sends each
//! job its updates. Requests take turns: the waiting jobs are queued per request and admitted round-robin, so one
//! request of thousands of prompts does not hold the others back; past `--max-queue` waiting rows a request is
//! turned away. A job whose client went away leaves the batch; a failure or panic while decoding fails the jobs
//! it touched and the thread goes on with an empty batch.

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{anyhow, Result};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

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
    /// Rows that may wait for room in the batch, all requests together: past it a request is turned away.
    pub max_queue: usize,
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

/// A job, the request it belongs to, when it was queued and where its events go.
struct Submission {
    job: Job,
    request: u64,
    queued: Instant,
    events: UnboundedSender<Event>,
}

/// Why a request's jobs were not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// More rows than `--max-queue` in one request: it can never be queued.
    TooLarge { rows: usize, max: usize },
    /// The queue is full for now: `waiting` rows wait already.
    Busy { waiting: usize, max: usize },
    /// The decoding thread has stopped.
    Stopped,
}

/// The way into the decoding thread, shared by the request handlers.
pub struct Intake {
    sender: Mutex<Sender<Submission>>,
    /// Rows queued and not yet admitted to the batch (or dropped).
    waiting: Arc<AtomicUsize>,
    max_queue: usize,
    next_request: AtomicU64,
}

impl Intake {
    /// Queues one request's jobs, all or none: none when they would take the waiting rows past `--max-queue`.
    /// Each job answers on its own channel.
    pub fn submit(&self, jobs: Vec<Job>) -> Result<Vec<UnboundedReceiver<Event>>, Refused> {
        let rows: usize = jobs.iter().map(|j| Limits::cost(j).0).sum();
        if rows > self.max_queue {
            return Err(Refused::TooLarge { rows, max: self.max_queue });
        }
        let sender = self.sender.lock().map_err(|_| Refused::Stopped)?;
        let waiting = self.waiting.load(Ordering::SeqCst);
        if waiting + rows > self.max_queue {
            return Err(Refused::Busy { waiting, max: self.max_queue });
        }
        self.waiting.fetch_add(rows, Ordering::SeqCst);
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let queued = Instant::now();
        let mut receivers = Vec::with_capacity(jobs.len());
        for job in jobs {
            let (events, receiver) = unbounded_channel();
            let cost = Limits::cost(&job).0;
            if sender.send(Submission { job, request, queued, events }).is_err() {
                self.waiting.fetch_sub(cost, Ordering::SeqCst);
                return Err(Refused::Stopped);
            }
            receivers.push(receiver);
        }
        Ok(receivers)
    }
}

/// The decoding thread and the way in.
pub struct Engine {
    pub intake: Arc<Intake>,
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
        let (sender, incoming) = std::sync::mpsc::channel();
        let waiting = Arc::new(AtomicUsize::new(0));
        let queue = Waiting::new(waiting.clone());
        let thread = std::thread::Builder::new()
            .name("ruprompts-decode".into())
            .spawn(move || run(&model, &tokenizer, prompts.as_ref(), limits, &metrics, incoming, queue))?;
        let intake =
            Intake { sender: Mutex::new(sender), waiting, max_queue: limits.max_queue, next_request: 0.into() };
        Ok(Self { intake: Arc::new(intake), thread })
    }

    /// Waits for the thread to finish its jobs (after every other holder of `intake` has let it go).
    pub fn join(self) -> Result<()> {
        drop(self.intake);
        self.thread.join().map_err(|_| anyhow!("the decoding thread panicked"))
    }
}

/// Jobs waiting for room in the batch, queued per request: requests take turns, a job at a time.
struct Waiting {
    requests: VecDeque<(u64, VecDeque<(u64, Submission)>)>,
    /// Rows waiting, shared with the [`Intake`] that counts them in.
    rows: Arc<AtomicUsize>,
}

impl Waiting {
    fn new(rows: Arc<AtomicUsize>) -> Self {
        Self { requests: VecDeque::new(), rows }
    }

    /// Queues a job behind its request's others (a request's jobs arrive together).
    fn push(&mut self, key: u64, s: Submission) {
        match self.requests.back_mut() {
            Some((request, jobs)) if *request == s.request => jobs.push_back((key, s)),
            _ => self.requests.push_back((s.request, VecDeque::from([(key, s)]))),
        }
    }

    /// The job whose turn it is.
    fn front(&self) -> Option<&Submission> {
        self.requests.front().and_then(|(_, jobs)| jobs.front()).map(|(_, s)| s)
    }

    /// Takes the job whose turn it is; its request goes to the back of the line.
    fn pop(&mut self) -> Option<(u64, Submission)> {
        let (request, mut jobs) = self.requests.pop_front()?;
        let job = jobs.pop_front();
        if !jobs.is_empty() {
            self.requests.push_back((request, jobs));
        }
        if let Some((_, s)) = &job {
            self.rows.fetch_sub(Limits::cost(&s.job).0, Ordering::SeqCst);
        }
        job
    }

    /// Drops the jobs whose clients went away.
    fn drop_abandoned(&mut self) {
        for (_, jobs) in &mut self.requests {
            jobs.retain(|(_, s)| {
                let open = !s.events.is_closed();
                if !open {
                    self.rows.fetch_sub(Limits::cost(&s.job).0, Ordering::SeqCst);
                }
                open
            });
        }
        self.requests.retain(|(_, jobs)| !jobs.is_empty());
    }

    fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    fn jobs(&self) -> usize {
        self.requests.iter().map(|(_, jobs)| jobs.len()).sum()
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
    mut waiting: Waiting,
) {
    let injections = prompts.map(MultiPrompt::injections).unwrap_or_default();
    let mut batcher: Batcher<u64> = Batcher::new(model, tokenizer, &injections);
    let mut running: HashMap<u64, Running> = HashMap::new();
    let mut next_key = 0u64;
    let mut closed = false;
    loop {
        // Block only when there is nothing to decode; end once nothing is left and nothing can come.
        let idle = running.is_empty() && waiting.is_empty();
        if idle && closed {
            return;
        }
        closed |= !receive(&incoming, &mut waiting, &mut next_key, idle);
        drop_gone(&mut batcher, &mut running, &mut waiting);
        // Beam search settles its outputs only at the end: a beam job whose turn it is decodes on its own.
        if waiting.front().is_some_and(|s| s.job.config.num_beams > 1) {
            let (_, s) = waiting.pop().expect("a front");
            metrics.queue_wait.observe(s.queued.elapsed().as_secs_f64());
            beams(model, tokenizer, &injections, s, metrics);
            continue;
        }
        let joining = joining(&mut waiting, &running, limits, metrics);
        metrics.queue_length.set(waiting.jobs() as i64);
        admit(&mut batcher, joining, &mut running, metrics);
        if batcher.rows() > 0 && !step(&mut batcher, &mut running, metrics) {
            batcher = Batcher::new(model, tokenizer, &injections);
        }
        metrics.running_rows.set(batcher.rows() as i64);
    }
}

/// Moves the submissions that have arrived into `waiting`, first waiting for one when `block`; `false` once every
/// sender is gone (the server is shutting down).
fn receive(incoming: &Receiver<Submission>, waiting: &mut Waiting, next_key: &mut u64, block: bool) -> bool {
    let mut queue = |s| {
        waiting.push(*next_key, s);
        *next_key += 1;
    };
    if block {
        match incoming.recv() {
            Ok(s) => queue(s),
            Err(_) => return false,
        }
    }
    loop {
        match incoming.try_recv() {
            Ok(s) => queue(s),
            Err(std::sync::mpsc::TryRecvError::Empty) => return true,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return false,
        }
    }
}

/// Clients that went away: their rows leave the batch, their queued jobs are dropped.
fn drop_gone(batcher: &mut Batcher<u64>, running: &mut HashMap<u64, Running>, waiting: &mut Waiting) {
    let gone: Vec<u64> = running.iter().filter(|(_, r)| r.events.is_closed()).map(|(k, _)| *k).collect();
    batcher.remove(&gone);
    gone.iter().for_each(|k| drop(running.remove(k)));
    waiting.drop_abandoned();
}

/// The jobs that join the batch now, taken in turn while they fit beside the running ones (a job larger than the
/// limits still decodes, alone); a beam job waits for its own turn.
fn joining(
    waiting: &mut Waiting,
    running: &HashMap<u64, Running>,
    limits: Limits,
    metrics: &Metrics,
) -> Vec<(u64, Submission, (usize, usize))> {
    let (mut rows, mut tokens) = running.values().fold((0, 0), |(r, t), j| (r + j.cost.0, t + j.cost.1));
    let mut joining = Vec::new();
    while let Some(s) = waiting.front() {
        let cost = Limits::cost(&s.job);
        let fits = rows + cost.0 <= limits.max_batch && tokens + cost.1 <= limits.max_batch_tokens;
        if s.job.config.num_beams > 1 || !(fits || (running.is_empty() && joining.is_empty())) {
            break;
        }
        let (key, s) = waiting.pop().expect("a front");
        metrics.queue_wait.observe(s.queued.elapsed().as_secs_f64());
        rows += cost.0;
        tokens += cost.1;
        joining.push((key, s, cost));
    }
    joining
}

/// Reads the joining jobs into the batch (one forward) and sends each its first updates; a failure or panic fails
/// those jobs alone.
fn admit(
    batcher: &mut Batcher<u64>,
    joining: Vec<(u64, Submission, (usize, usize))>,
    running: &mut HashMap<u64, Running>,
    metrics: &Metrics,
) {
    if joining.is_empty() {
        return;
    }
    let jobs: Vec<(u64, Job)> = joining.iter().map(|(k, s, _)| (*k, s.job.clone())).collect();
    for (key, s, cost) in joining {
        running.insert(key, Running { events: s.events, cost });
    }
    let keys: Vec<u64> = jobs.iter().map(|(k, _)| *k).collect();
    match catch_unwind(AssertUnwindSafe(|| batcher.admit(jobs))) {
        Ok(Ok(updates)) => deliver(updates, running, metrics),
        Ok(Err(e)) => fail(&keys, &format!("{e:#}"), running),
        Err(panic) => fail(&keys, &panic_message(&panic), running),
    }
    // Jobs that were done at once (max_tokens 0, an early stop) are not in the batch.
    let inside: Vec<u64> = batcher.keys().copied().collect();
    running.retain(|k, _| !keys.contains(k) || inside.contains(k));
}

/// One decoding step of the whole batch, its updates sent; `false` when it failed (or panicked): every job in the
/// batch has been failed, and the caller starts an empty batch.
fn step(batcher: &mut Batcher<u64>, running: &mut HashMap<u64, Running>, metrics: &Metrics) -> bool {
    metrics.batch_rows.observe(batcher.rows() as f64);
    let message = match catch_unwind(AssertUnwindSafe(|| batcher.step())) {
        Ok(Ok(updates)) => {
            deliver(updates, running, metrics);
            let inside: Vec<u64> = batcher.keys().copied().collect();
            running.retain(|k, _| inside.contains(k));
            return true;
        }
        Ok(Err(e)) => format!("{e:#}"),
        Err(panic) => panic_message(&panic),
    };
    let keys: Vec<u64> = batcher.keys().copied().collect();
    fail(&keys, &message, running);
    false
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

    /// The panic net catches what should never happen; here a job asking for more alternatives per token than
    /// the vocabulary has, which the HTTP side refuses before it gets this far.
    #[test]
    fn a_panic_while_decoding_fails_its_job_and_the_engine_goes_on() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-gpt2-ru");
        let model = Model::from_dir(&dir, Kind::Float, Device::Cpu).unwrap();
        let tokenizer = Tokenizer::from_dir(&dir).unwrap();
        let limits = Limits { max_batch: 8, max_batch_tokens: 10_000, max_queue: 64 };
        let engine = Engine::start(model, tokenizer, None, limits, Metrics::default()).unwrap();
        let job = |logprobs| Job {
            input: vec![5, 6, 7],
            config: GenerationConfig { max_new_tokens: 3, ..Default::default() },
            logprobs,
            echo: None,
        };
        let mut heard = engine.intake.submit(vec![job(Some(100_000))]).unwrap().remove(0);
        match heard.blocking_recv() {
            Some(Event::Failed(message)) => assert!(message.starts_with("decoding panicked"), "{message}"),
            other => panic!("expected a failure, got {other:?}"),
        }
        let mut heard = engine.intake.submit(vec![job(None)]).unwrap().remove(0);
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
