//! Generation speed with a prompt: tokens/s for batch 1 and batch 8, greedy with and without the KV cache and
//! with 4 beams (cache reordered), on the tiny fixture model and a ruGPT-3-small-shaped model with random weights
//! (12×768, vocab 50264). No eos, so every row makes exactly `--new-tokens` tokens (counted once per input, not
//! per beam); a 20-token tensor prompt before a 12-token text.
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
    println!("| model | batch | decoding | KV cache | seconds | new tokens/s | cache speed-up |");
    println!("|---|---|---|---|---|---|---|");
    for ((name, model), tok) in models.iter().zip(common::tokenizers()?) {
        for batch in [1, 8] {
            let without = common::generation_seconds(model, &tok, batch, new_tokens, false, 1)?;
            let with = common::generation_seconds(model, &tok, batch, new_tokens, true, 1)?;
            let rate = |s: f64| (batch * new_tokens) as f64 / s;
            println!("| {name} | {batch} | greedy | no | {without:.2} | {:.1} | 1.00 |", rate(without));
            println!("| {name} | {batch} | greedy | yes | {with:.2} | {:.1} | {:.2} |", rate(with), without / with);
            let beams = common::generation_seconds(model, &tok, batch, new_tokens, true, 4)?;
            println!("| {name} | {batch} | 4 beams | yes | {beams:.2} | {:.1} | |", rate(beams));
        }
    }
    Ok(())
}
