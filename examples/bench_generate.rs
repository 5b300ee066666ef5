//! Generation speed with a prompt: tokens/s for batch 1 and batch 8, with and without the KV cache, on the tiny
//! fixture model and a ruGPT-3-small-shaped model with random weights (12×768, vocab 50264). Greedy, no eos, so
//! every row makes exactly `--new-tokens` tokens; a 20-token tensor prompt before a 12-token text.
//!
//! `cargo run --release --example bench_generate -- [--new-tokens N] [--device cpu|cuda] [--threads N]`

mod common;

use anyhow::Result;

fn main() -> Result<()> {
    let flags = common::Flags::parse();
    let new_tokens = flags.number("--new-tokens", 32)?;
    let device = flags.device()?;
    let models = common::models(device)?;
    println!(
        "{}-token prompt + ~{}-token text, {new_tokens} new tokens a row, greedy, {device:?}, {} threads\n",
        common::PROMPT,
        common::GEN_TEXT,
        tch::get_num_threads()
    );
    println!("| model | batch | KV cache | seconds | new tokens/s | cache speed-up |");
    println!("|---|---|---|---|---|---|");
    for (name, model) in &models {
        for batch in [1, 8] {
            let without = common::generation_seconds(model, batch, new_tokens, false)?;
            let with = common::generation_seconds(model, batch, new_tokens, true)?;
            let rate = |s: f64| (batch * new_tokens) as f64 / s;
            println!("| {name} | {batch} | no | {without:.2} | {:.1} | 1.00 |", rate(without));
            println!("| {name} | {batch} | yes | {with:.2} | {:.1} | {:.2} |", rate(with), without / with);
        }
    }
    Ok(())
}
