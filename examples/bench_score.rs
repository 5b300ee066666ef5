//! Scoring throughput of perplexity-based classification: naive (context + candidate per forward) against
//! shared-context (context once into the KV cache, candidates batched from it), side by side, on the tiny fixture
//! model and a ruGPT-3-small-shaped model with random weights. Two task shapes: DaNetQA (a ~120-token passage and
//! question, answers " да"/" нет", one token each) and PARus (a ~25-token premise and question, two ~12-token
//! alternatives). A 20-token tensor prompt before the context.
//!
//! `cargo run --release --example bench_score -- [--examples N] [--device cpu|cuda] [--threads N]`

mod common;

use std::time::Instant;

use anyhow::Result;
use ruprompts::model::Model;
use ruprompts::task::{score_naive, score_shared, score_shared_many, Candidate, Scored};

/// Token ids that look like text of `len` tokens (deterministic, inside the vocabulary).
fn text(model: &Model, seed: usize, len: usize) -> Vec<i64> {
    let vocab = model.config().vocab_size as usize;
    (0..len).map(|i| ((seed * 7919 + i * 104729 + 17) % vocab) as i64).collect()
}

/// (context, candidates) of one example of the given shape.
fn example(model: &Model, task: &str, i: usize, prompt_id: i64, prompt_len: usize) -> (Vec<i64>, Vec<Candidate>) {
    let (context_len, answers): (usize, Vec<usize>) = match task {
        "DaNetQA" => (120, vec![1, 1]),
        _ => (25, vec![12, 12]),
    };
    let context = [vec![prompt_id; prompt_len], text(model, i, context_len)].concat();
    let candidates = answers
        .iter()
        .enumerate()
        .map(|(k, &n)| Candidate { answer: text(model, i * 31 + k + 1, n), suffix: vec![] })
        .collect();
    (context, candidates)
}

fn main() -> Result<()> {
    let flags = common::Flags::parse();
    let n = flags.number("--examples", 8)?;
    let device = flags.device()?;
    let models = common::models(device)?;
    println!("{n} examples a row, 20-token prompt, {device:?}, {} threads", tch::get_num_threads());
    println!("examples/s; \"answers\" scores the answer only (modes sum, per_char, per_byte, calibrated),");
    println!("\"whole text\" also every context and suffix token (mode mean_loss)\n");
    println!(
        "| model | task | naive, whole text | naive, answers | shared, whole text | shared, answers | \
         shared, answers, {n} items a batch | speed-up vs naive whole text | max |Δ log-prob| |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, model) in &models {
        let (prompt, id) = common::prefix_prompt(model, 20)?;
        let injection = [prompt.injection(id)];
        for task in ["DaNetQA", "PARus"] {
            let examples: Vec<_> = (0..n).map(|i| example(model, task, i, id, 20)).collect();
            score_naive(model, &injection, &examples[0].0, &examples[0].1, true)?; // warm-up
            let run = |shared: bool, whole_text: bool| -> Result<(f64, Vec<Vec<Scored>>)> {
                let start = Instant::now();
                let scored = examples
                    .iter()
                    .map(|(c, cands)| {
                        if shared {
                            score_shared(model, &injection, c, cands, whole_text)
                        } else {
                            score_naive(model, &injection, c, cands, whole_text)
                        }
                    })
                    .collect::<Result<_>>()?;
                Ok((n as f64 / start.elapsed().as_secs_f64(), scored))
            };
            let (naive_whole, reference) = run(false, true)?;
            let (naive_answers, _) = run(false, false)?;
            let (shared_whole, _) = run(true, true)?;
            let (shared_answers, scored) = run(true, false)?;
            // All examples' contexts in one batch, then all their candidates in one.
            let start = Instant::now();
            let requests: Vec<(&[i64], &[Candidate])> =
                examples.iter().map(|(c, k)| (c.as_slice(), k.as_slice())).collect();
            let batched = score_shared_many(model, &injection, &requests, false)?;
            let batched_rate = n as f64 / start.elapsed().as_secs_f64();
            let diff = [&scored, &batched]
                .iter()
                .flat_map(|s| reference.iter().flatten().zip(s.iter().flatten()))
                .map(|(a, b)| (a.answer_logprob - b.answer_logprob).abs())
                .fold(0.0, f64::max);
            println!(
                "| {name} | {task} | {naive_whole:.1} | {naive_answers:.1} | {shared_whole:.1} | {shared_answers:.1} | \
                 {batched_rate:.1} | {:.2} | {diff:.1e} |",
                shared_answers.max(batched_rate) / naive_whole
            );
        }
    }
    Ok(())
}
