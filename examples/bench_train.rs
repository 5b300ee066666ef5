//! Training-step speed on CPU (or `--device cuda`): the tiny fixture model and a ruGPT-3-small-shaped model with
//! random weights (12 layers, d=768, vocab 50264; speed does not depend on weight values), batch 8 × 128 tokens,
//! a 20-token tensor prompt, 16 labelled tokens per row (a short target, as in classification and most text2text).
//! Compares our loss ([`Gpt2::loss`]: the last block from the first labelled position on, the vocabulary projection
//! at labelled positions only) with the full forward and projection at every position that transformers' `labels=`
//! loss (and so ruPrompts) computes. Same run, side by side.
//!
//! `cargo run --release --example bench_train -- [--steps N] [--device cpu|cuda] [--threads N]`

use std::time::Instant;

mod common;

use anyhow::Result;
use ruprompts::model::{Gpt2, Input};
use ruprompts::train::{AdamW, AdamWConfig};
use tch::{Kind, Tensor};

const BATCH: i64 = 8;
const TOKENS: i64 = 128;
const PROMPT: usize = 20;
const LABELLED: i64 = 16;

/// Mean seconds per training step (forward, backward, AdamW) over `steps`, after one warm-up step.
fn time_steps(model: &Gpt2, full_projection: bool, steps: usize) -> Result<f64> {
    let (prompt, prompt_id) = common::prefix_prompt(model, PROMPT)?;
    let mut opt = AdamW::new(
        AdamWConfig { lr: 1e-3, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0 },
        prompt.var_store().variables().into_iter().collect(),
    );
    let device = model.device();
    let vocab = model.config().vocab_size;
    let text = Tensor::randint(vocab, [BATCH, TOKENS - PROMPT as i64], (Kind::Int64, device));
    let ids = Tensor::cat(&[Tensor::full([BATCH, PROMPT as i64], prompt_id, (Kind::Int64, device)), text], 1);
    let keep = Tensor::arange(TOKENS, (Kind::Int64, device)).ge(TOKENS - LABELLED).unsqueeze(0);
    let labels = ids.where_self(&keep, &Tensor::full([1], -100, (Kind::Int64, device)));
    let mut total = 0.0;
    for step in 0..=steps {
        let start = Instant::now();
        opt.zero_grad();
        let embeds = prompt.embed(model, &ids, prompt_id)?;
        let loss = if full_projection {
            let hidden = model.forward(Input::Embeds(&embeds), None, None)?;
            let logits = model.lm_logits(&hidden.narrow(1, 0, TOKENS - 1));
            logits.reshape([-1, vocab]).cross_entropy_loss::<Tensor>(
                &labels.narrow(1, 1, TOKENS - 1).reshape([-1]),
                None,
                tch::Reduction::Mean,
                -100,
                0.0,
            )
        } else {
            model.loss(Input::Embeds(&embeds), None, &labels)?
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
    let flags = common::Flags::parse();
    let steps = flags.number("--steps", 3)?;
    let device = flags.device()?;
    let models = common::models(device)?;
    println!(
        "batch {BATCH} × {TOKENS} tokens, {PROMPT}-token tensor prompt, {LABELLED} labelled tokens a row, {steps} timed steps, {device:?}, {} threads\n",
        tch::get_num_threads()
    );
    println!("| model | loss | s/step | steps/s | speed-up |");
    println!("|---|---|---|---|---|");
    for (name, model) in &models {
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
