//! Generation speed with a prompt: tokens/s for batch 1 and batch 8, with and without the KV cache, on the tiny
//! fixture model and a ruGPT-3-small-shaped model with random weights (12×768, vocab 50264). Greedy, no eos, so
//! every row makes exactly `--new-tokens` tokens; a 20-token tensor prompt before a 12-token text.
//!
//! `cargo run --release --example bench_generate -- [--new-tokens N] [--device cpu|cuda] [--threads N]`

use std::time::Instant;

mod common;

use anyhow::Result;
use ruprompts::generate::{generate, GenerationConfig};
use ruprompts::model::Gpt2;

const PROMPT: usize = 20;
const TEXT: usize = 12;

/// Seconds to generate `new_tokens` for each of `batch` rows (after one warm-up run).
fn time_generation(model: &Gpt2, batch: usize, new_tokens: usize, use_cache: bool) -> Result<f64> {
    let (prompt, token_id) = common::prefix_prompt(model, PROMPT)?;
    let vocab = model.config().vocab_size;
    // Rows of slightly different lengths, so batches carry left padding as real ones do.
    let inputs: Vec<Vec<i64>> = (0..batch)
        .map(|r| {
            let text = (0..TEXT - r % 3).map(|i| ((r * 7919 + i * 104729) as i64) % vocab);
            std::iter::repeat_n(token_id, PROMPT).chain(text).collect()
        })
        .collect();
    let config = GenerationConfig { max_new_tokens: new_tokens, use_cache, ..Default::default() };
    let injection = [prompt.injection(token_id)];
    generate(model, &inputs, &injection, &GenerationConfig { max_new_tokens: 2, ..config.clone() })?;
    let start = Instant::now();
    let out = generate(model, &inputs, &injection, &config)?;
    let seconds = start.elapsed().as_secs_f64();
    anyhow::ensure!(out.iter().all(|o| o[0].new_ids.len() == new_tokens), "a row stopped early");
    Ok(seconds)
}

fn main() -> Result<()> {
    let flags = common::Flags::parse();
    let new_tokens = flags.number("--new-tokens", 32)?;
    let device = flags.device()?;
    let models = common::models(device)?;
    println!(
        "{PROMPT}-token prompt + ~{TEXT}-token text, {new_tokens} new tokens a row, greedy, {device:?}, {} threads\n",
        tch::get_num_threads()
    );
    println!("| model | batch | KV cache | seconds | new tokens/s | cache speed-up |");
    println!("|---|---|---|---|---|---|");
    for (name, model) in &models {
        for batch in [1, 8] {
            let without = time_generation(model, batch, new_tokens, false)?;
            let with = time_generation(model, batch, new_tokens, true)?;
            let rate = |s: f64| (batch * new_tokens) as f64 / s;
            println!("| {name} | {batch} | no | {without:.2} | {:.1} | 1.00 |", rate(without));
            println!("| {name} | {batch} | yes | {with:.2} | {:.1} | {:.2} |", rate(with), without / with);
        }
    }
    Ok(())
}
