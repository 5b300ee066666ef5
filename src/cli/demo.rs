//! `ruprompts demo`: the bundled tiny Russian GPT-2, built on first use, summarised and continuing a few prompts.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;

use super::bars::Bars;
use super::info::print_summary;
use super::Placement;
use crate::demo::{self, TinyModelSpec};
use crate::generate::{generate, GenerationConfig};
use crate::model::Backbone;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo model lives (built there on first use).
    /// Default: $RUPROMPTS_HOME/tiny-gpt2-ru, else ~/.cache/ruprompts/tiny-gpt2-ru.
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
    /// Build the demo model again even if it exists.
    #[arg(long)]
    pub rebuild: bool,
    /// Pretraining steps when building the demo model.
    #[arg(long, default_value_t = TinyModelSpec::default().steps)]
    pub steps: usize,
    /// Tokens to generate per prompt.
    #[arg(long, default_value_t = 24)]
    pub max_new_tokens: usize,
    #[command(flatten)]
    pub placement: Placement,
    /// Prompts to continue (default: three Russian openings).
    pub prompts: Vec<String>,
}

pub fn run(args: DemoArgs) -> Result<()> {
    let dir = args.model_dir.unwrap_or_else(demo::default_dir);
    let spec = TinyModelSpec { steps: args.steps, ..TinyModelSpec::default() };
    let start = Instant::now();
    let device = args.placement.device().resolve()?;
    if let Some(report) = demo::build_if_missing(&dir, &spec, args.rebuild, device, &Bars::default())? {
        println!(
            "trained a {}-token BPE tokenizer and pretrained {} steps in {:.1} s: loss {:.2} -> {:.2}\n",
            spec.vocab_size,
            spec.steps,
            start.elapsed().as_secs_f64(),
            report.initial_loss,
            report.final_loss
        );
    }
    let Backbone { dir, model, tokenizer, .. } = Backbone::load(&args.placement.model(dir.clone()), &dir)?;
    print_summary(&dir, &model, &tokenizer);
    let prompts = if args.prompts.is_empty() {
        vec!["Москва — столица".to_string(), "Солнце — это".to_string(), "В России самая длинная река".to_string()]
    } else {
        args.prompts
    };
    println!("\ngreedy continuations ({} new tokens at most):", args.max_new_tokens);
    let eos = tokenizer.special().eos.map(i64::from);
    let config = GenerationConfig { max_new_tokens: args.max_new_tokens, eos_token_id: eos, ..Default::default() };
    let inputs = prompts.iter().map(|p| tokenizer.encode_sequence_ids(p)).collect::<Result<Vec<_>>>()?;
    let outputs = generate(&model, &tokenizer, &inputs, &[], &config)?;
    for ((prompt, input), out) in prompts.iter().zip(&inputs).zip(outputs) {
        let new_ids: Vec<i64> = out[0].new_ids.iter().copied().filter(|&id| Some(id) != eos).collect();
        println!("  {prompt} ▸ {}", tokenizer.decode_after(input, &new_ids)?);
    }
    Ok(())
}
