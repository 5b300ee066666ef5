//! Training-step speed on CPU (or `--device cuda`): the tiny fixture model and a ruGPT-3-small-shaped model with
//! random weights (12 layers, d=768, vocab 50264; speed does not depend on weight values), batch 8 × 128 tokens,
//! a 20-token tensor prompt, 16 labelled tokens per row (a short target, as in classification and most text2text).
//! Compares our loss ([`Model::loss`]: the last block from the first labelled position on, the vocabulary projection
//! at labelled positions only) with the full forward and projection at every position that transformers' `labels=`
//! loss (and so ruPrompts) computes. Same run, side by side.
//!
//! `cargo run --release --example bench_train -- [--steps N] [--device cpu|cuda] [--threads N]`

mod common;

use anyhow::Result;

fn main() -> Result<()> {
    let flags = common::Flags::parse();
    let steps = flags.number("--steps", 3)?;
    let device = flags.device()?;
    let models = common::models(device)?;
    println!(
        "batch {} × {} tokens, {}-token tensor prompt, {} labelled tokens a row, {steps} timed steps, {device:?}, {} threads\n",
        common::TRAIN_BATCH,
        common::TRAIN_TOKENS,
        common::PROMPT,
        common::TRAIN_LABELLED,
        tch::get_num_threads()
    );
    println!("| model | loss | s/step | steps/s | speed-up |");
    println!("|---|---|---|---|---|");
    for (name, model) in &models {
        let full = common::train_step_seconds(model, true, steps)?;
        let ours = common::train_step_seconds(model, false, steps)?;
        println!("| {name} | vocabulary at every position (transformers) | {full:.3} | {:.2} | 1.00 |", 1.0 / full);
        println!(
            "| {name} | vocabulary at labelled positions (ours) | {ours:.3} | {:.2} | {:.2} |",
            1.0 / ours,
            full / ours
        );
    }
    Ok(())
}
