//! Generation speed with a prompt: tokens/s for batch 1 and batch 8, with and without the KV cache, on the tiny
//! fixture model and a ruGPT-3-small-shaped model with random weights (12×768, vocab 50264). Greedy, no eos, so
//! every row makes exactly `--new-tokens` tokens; a 20-token tensor prompt before a 12-token text.
//!
//! `cargo run --release --example bench_generate -- [--new-tokens N] [--device cpu|cuda] [--threads N]`

use std::time::Instant;

use anyhow::{Context, Result};
use ruprompts::device::DeviceChoice;
use ruprompts::format::{PromptFormat, PROMPT_TOKEN};
use ruprompts::generate::{generate, GenerationConfig};
use ruprompts::model::{Gpt2, Gpt2Config};
use ruprompts::prompt::Prompt;
use ruprompts::provider::ProviderConfig;
use tch::{Device, Kind};

const PROMPT: usize = 20;
const TEXT: usize = 12;

/// Seconds to generate `new_tokens` for each of `batch` rows (after one warm-up run).
fn time_generation(model: &Gpt2, batch: usize, new_tokens: usize, use_cache: bool) -> Result<f64> {
    let compiled = format!("{}{{text}}", PROMPT_TOKEN.repeat(PROMPT));
    let format = PromptFormat::from_compiled(&format!("<P*{PROMPT}>{{text}}"), &compiled)?;
    let prompt = Prompt::new(format, ProviderConfig::default(), model)?;
    let vocab = model.config().vocab_size;
    let token_id = vocab;
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let new_tokens: usize = value("--new-tokens").map_or(Ok(32), |s| s.parse()).context("--new-tokens")?;
    if let Some(n) = value("--threads") {
        tch::set_num_threads(n.parse().context("--threads")?);
    }
    let device: Device = match value("--device").as_deref() {
        Some("cuda") => DeviceChoice::Cuda,
        Some("cpu") | None => DeviceChoice::Cpu,
        Some(other) => anyhow::bail!("--device {other}: expected cpu or cuda"),
    }
    .resolve()?;
    let shared = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared");
    let tiny = Gpt2::from_dir(&shared.join("fixtures/tiny-gpt2-ru"), Kind::Float, device)?;
    tch::manual_seed(0);
    let small =
        Gpt2::random(Gpt2Config::from_file(&shared.join("tokenizers/rugpt3/config.json"))?, Kind::Float, device)?;
    println!(
        "{PROMPT}-token prompt + ~{TEXT}-token text, {new_tokens} new tokens a row, greedy, {device:?}, {} threads\n",
        tch::get_num_threads()
    );
    println!("| model | batch | KV cache | seconds | new tokens/s | cache speed-up |");
    println!("|---|---|---|---|---|---|");
    for (name, model) in [("tiny (2×64, vocab 2000)", &tiny), ("ruGPT-3-small shape (12×768, vocab 50264)", &small)] {
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
