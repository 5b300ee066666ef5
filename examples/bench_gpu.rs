//! The three hot paths at a real model's shape on one device, in f32 and bf16: a training step (batch 8 × 128
//! tokens, 20-token tensor prompt, AdamW), scoring (8 DaNetQA-like items a batch: a 250-token context after the
//! prompt, two one-token answers, from the shared context's KV cache) and greedy decoding (64 new tokens, batch 1
//! and 8). The weights are random (speed does not depend on their values). `scripts/gpu-check.sh` runs it on a GPU.
//!
//! `cargo run --release --example bench_gpu -- [--device cuda|cpu] [--shape large|medium|small] [--steps N]
//! [--dtype f32|bf16|both]`

mod common;

use std::time::Instant;

use anyhow::{bail, Result};
use ruprompts::model::{Gpt2Config, Model};
use ruprompts::task::{score_shared_many, Candidate};
use tch::Kind;

const SCORE_CONTEXT: usize = 250;
const SCORE_ITEMS: usize = 8;
const NEW_TOKENS: usize = 64;

/// ruGPT-3's config (tests/fixtures/rugpt3) with the layers, width and heads of the named size.
fn shape(name: &str) -> Result<Gpt2Config> {
    let mut config = Gpt2Config::from_file(&common::repo_file("tests/fixtures/rugpt3/config.json"))?;
    (config.n_layer, config.n_embd, config.n_head) = match name {
        "small" => (12, 768, 12),
        "medium" => (24, 1024, 16),
        "large" => (24, 1536, 16),
        other => bail!("--shape {other}: expected small, medium or large"),
    };
    Ok(config)
}

/// Scored items per second: `SCORE_ITEMS` contexts a batch, each with two one-token candidates (mean of `runs`
/// batches after one warm-up batch).
fn scoring_rate(model: &Model, runs: usize) -> Result<f64> {
    let (prompt, token_id) = common::prefix_prompt(model, common::PROMPT)?;
    let vocab = model.config().vocab_size;
    let contexts: Vec<Vec<i64>> = (0..SCORE_ITEMS)
        .map(|r| {
            let text = (0..SCORE_CONTEXT - common::PROMPT - r % 5).map(|i| ((r * 7919 + i * 104729) as i64) % vocab);
            std::iter::repeat_n(token_id, common::PROMPT).chain(text).collect()
        })
        .collect();
    let candidates =
        [Candidate { answer: vec![1000], suffix: vec![] }, Candidate { answer: vec![2000], suffix: vec![] }];
    let requests: Vec<(&[i64], &[Candidate])> = contexts.iter().map(|c| (c.as_slice(), &candidates[..])).collect();
    let injection = [prompt.injection(token_id)];
    let _guard = tch::no_grad_guard();
    score_shared_many(model, &injection, &requests, false)?;
    let start = Instant::now();
    for _ in 0..runs {
        score_shared_many(model, &injection, &requests, false)?;
    }
    Ok((runs * SCORE_ITEMS) as f64 / start.elapsed().as_secs_f64())
}

fn main() -> Result<()> {
    let flags = common::Flags::parse();
    let device = flags.device()?;
    let steps = flags.number("--steps", 5)?;
    let name = flags.value("--shape").unwrap_or("large").to_string();
    let kinds: &[(&str, Kind)] = match flags.value("--dtype").unwrap_or("both") {
        "f32" => &[("f32", Kind::Float)],
        "bf16" => &[("bf16", Kind::BFloat16)],
        "both" => &[("f32", Kind::Float), ("bf16", Kind::BFloat16)],
        other => bail!("--dtype {other}: expected f32, bf16 or both"),
    };
    let config = shape(&name)?;
    println!(
        "ruGPT-3-{name} shape ({} layers, d {}, {} heads, vocab {}), random weights, {device:?}\n",
        config.n_layer, config.n_embd, config.n_head, config.vocab_size
    );
    println!("| dtype | training steps/s | scored items/s | new tokens/s, batch 1 | new tokens/s, batch 8 |");
    println!("|---|---:|---:|---:|---:|");
    let tok = common::tokenizers()?.into_iter().nth(1).expect("two tokenizers");
    for &(label, kind) in kinds {
        let model = ruprompts::rng::seeded(0, || Model::random(config.clone(), kind, device))?;
        let train = 1.0 / common::train_step_seconds(&model, false, steps)?;
        let score = scoring_rate(&model, steps)?;
        let decode = |batch: usize| -> Result<f64> {
            Ok((batch * NEW_TOKENS) as f64 / common::generation_seconds(&model, &tok, batch, NEW_TOKENS, true, 1)?)
        };
        println!("| {label} | {train:.2} | {score:.1} | {:.1} | {:.1} |", decode(1)?, decode(8)?);
    }
    Ok(())
}
