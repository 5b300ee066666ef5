//! Training-step speed on CPU (or `--device cuda`): the tiny fixture model and a ruGPT-3-small-shaped model with
//! random weights (12 layers, d=768, vocab 50264; speed does not depend on weight values), batch 8 × 128 tokens,
//! a 20-token tensor prompt, 16 labelled tokens per row (a short target, as in classification and most text2text).
//! Compares our loss, which projects to the vocabulary only at labelled positions, with the projection at every
//! position that transformers' `labels=` loss (and so ruPrompts) computes. Same run, side by side.
//!
//! `cargo run --release --example bench_train -- [--steps N] [--device cpu|cuda] [--threads N]`

use std::time::Instant;

use anyhow::{Context, Result};
use ruprompts::device::DeviceChoice;
use ruprompts::format::{PromptFormat, PROMPT_TOKEN};
use ruprompts::model::{Gpt2, Gpt2Config, Input};
use ruprompts::prompt::Prompt;
use ruprompts::provider::ProviderConfig;
use ruprompts::train::{AdamW, AdamWConfig};
use tch::{Kind, Tensor};

const BATCH: i64 = 8;
const TOKENS: i64 = 128;
const PROMPT: usize = 20;
const LABELLED: i64 = 16;

/// Mean seconds per training step (forward, backward, AdamW) over `steps`, after one warm-up step.
fn time_steps(model: &Gpt2, full_projection: bool, steps: usize) -> Result<f64> {
    let compiled = format!("{}{{text}}", PROMPT_TOKEN.repeat(PROMPT));
    let format = PromptFormat::from_compiled(&format!("<P*{PROMPT}>{{text}}"), &compiled)?;
    let prompt = Prompt::new(format, ProviderConfig::default(), model)?;
    let mut opt = AdamW::new(
        AdamWConfig { lr: 1e-3, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0 },
        prompt.var_store().variables().into_iter().collect(),
    );
    let device = model.device();
    let vocab = model.config().vocab_size;
    let prompt_id = vocab; // outside the embedding matrix, as ruPrompts gives it
    let text = Tensor::randint(vocab, [BATCH, TOKENS - PROMPT as i64], (Kind::Int64, device));
    let ids = Tensor::cat(&[Tensor::full([BATCH, PROMPT as i64], prompt_id, (Kind::Int64, device)), text], 1);
    let keep = Tensor::arange(TOKENS, (Kind::Int64, device)).ge(TOKENS - LABELLED).unsqueeze(0);
    let labels = ids.where_self(&keep, &Tensor::full([1], -100, (Kind::Int64, device)));
    let mut total = 0.0;
    for step in 0..=steps {
        let start = Instant::now();
        opt.zero_grad();
        let embeds = prompt.embed(model, &ids, prompt_id)?;
        let hidden = model.forward(Input::Embeds(&embeds), None, None)?;
        let loss = if full_projection {
            let logits = model.lm_logits(&hidden.narrow(1, 0, TOKENS - 1));
            logits.reshape([-1, vocab]).cross_entropy_loss::<Tensor>(
                &labels.narrow(1, 1, TOKENS - 1).reshape([-1]),
                None,
                tch::Reduction::Mean,
                -100,
                0.0,
            )
        } else {
            model.lm_loss(&hidden, &labels)
        };
        loss.backward();
        opt.step(1e-3);
        let _ = loss.double_value(&[]); // waits for the device
        if step > 0 {
            total += start.elapsed().as_secs_f64();
        }
    }
    Ok(total / steps as f64)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let steps: usize = value("--steps").map_or(Ok(3), |s| s.parse()).context("--steps")?;
    if let Some(n) = value("--threads") {
        tch::set_num_threads(n.parse().context("--threads")?);
    }
    let device = match value("--device").as_deref() {
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
        "batch {BATCH} × {TOKENS} tokens, {PROMPT}-token tensor prompt, {LABELLED} labelled tokens a row, {steps} timed steps, {device:?}, {} threads\n",
        tch::get_num_threads()
    );
    println!("| model | loss | s/step | steps/s | speed-up |");
    println!("|---|---|---|---|---|");
    for (name, model) in [("tiny (2×64, vocab 2000)", &tiny), ("ruGPT-3-small shape (12×768, vocab 50264)", &small)] {
        let full = time_steps(model, true, steps)?;
        let ours = time_steps(model, false, steps)?;
        println!("| {name} | vocabulary at every position (transformers) | {full:.3} | {:.2} | 1.00 |", 1.0 / full);
        println!(
            "| {name} | vocabulary at labelled positions (ours) | {ours:.3} | {:.2} | {:.2} |",
            1.0 / ours,
            full / ours
        );
    }
    Ok(())
}
