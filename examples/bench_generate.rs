//! Generation speed with a prompt: tokens/s for batch 1 and batch 8, greedy with and without the KV cache and
//! with 4 beams (cache reordered), on the tiny fixture model and a ruGPT-3-small-shaped model with random weights
//! (12×768, vocab 50264). No eos, so every row makes exactly `--new-tokens` tokens (counted once per input, not
//! per beam); a 20-token tensor prompt before a 12-token text.
//!
//! `--model PATH` times that checkpoint instead (a Hugging Face folder or a GGUF file, f32 on the CPU, e.g. the real
//! model `.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf`), `--quantize int8|int4` its blocks' weights: decoding
//! speed on real weights, in one process, without the command line's start-up.
//!
//! `cargo run --release --example bench_generate -- [--new-tokens N] [--device cpu|cuda] [--threads N]
//! [--model PATH [--quantize int8|int4]]`

mod common;

use anyhow::Result;
use ruprompts::device::DeviceChoice;
use ruprompts::model::{Backbone, Model, ModelSource, Quantize};
use ruprompts::tokenizer::Tokenizer;
use tch::Device;

fn main() -> Result<()> {
    let flags = common::Flags::parse();
    let new_tokens = flags.number("--new-tokens", 32)?;
    let device = flags.device()?;
    let models: Vec<(String, Model, Tokenizer)> = match flags.value("--model") {
        Some(path) => {
            anyhow::ensure!(device == Device::Cpu, "--model is timed on the CPU");
            let quantize = match flags.value("--quantize") {
                None => Quantize::None,
                Some(q) => serde_yaml::from_str(q).map_err(|e| anyhow::anyhow!("--quantize {q}: {e}"))?,
            };
            let source = ModelSource { device: DeviceChoice::Cpu, quantize, ..ModelSource::local(path) };
            let Backbone { model, tokenizer, .. } = Backbone::load_local(&source)?;
            vec![(format!("{path} ({quantize})"), model, tokenizer)]
        }
        None => common::models(device)?
            .into_iter()
            .zip(common::tokenizers()?)
            .map(|((name, model), tok)| (name.to_string(), model, tok))
            .collect(),
    };
    println!(
        "{}-token prompt + ~{}-token text, {new_tokens} new tokens a row, greedy, {device:?}, {} threads\n",
        common::PROMPT,
        common::GEN_TEXT,
        tch::get_num_threads()
    );
    println!("| model | batch | decoding | KV cache | seconds | new tokens/s | cache speed-up |");
    println!("|---|---|---|---|---|---|---|");
    for (name, model, tok) in &models {
        for batch in [1, 8] {
            let without = common::generation_seconds(model, tok, batch, new_tokens, false, 1)?;
            let with = common::generation_seconds(model, tok, batch, new_tokens, true, 1)?;
            let rate = |s: f64| (batch * new_tokens) as f64 / s;
            println!("| {name} | {batch} | greedy | no | {without:.2} | {:.1} | 1.00 |", rate(without));
            println!("| {name} | {batch} | greedy | yes | {with:.2} | {:.1} | {:.2} |", rate(with), without / with);
            let beams = common::generation_seconds(model, tok, batch, new_tokens, true, 4)?;
            println!("| {name} | {batch} | 4 beams | yes | {beams:.2} | {:.1} | |", rate(beams));
        }
    }
    Ok(())
}
