//! `ruprompts info`: the summary of a checkpoint.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;

use super::bars::Bars;
use super::numbers::group_thousands;
use super::Placement;
use crate::model::Model;
use crate::resolve;
use crate::tokenizer::Tokenizer;

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Hugging Face model directory (config.json, model.safetensors or sharded or pytorch_model.bin,
    /// tokenizer.json or vocab.json + merges.txt), a Hub id (`owner/name[@revision]`, pulled into the Hugging Face
    /// cache) or `demo`.
    pub model: PathBuf,
    #[command(flatten)]
    pub placement: Placement,
}

pub fn run(args: ModelArgs) -> Result<()> {
    let backbone = resolve::backbone(&args.placement.model(args.model.clone()), &Bars::default())?;
    print_summary(&backbone.dir, &backbone.model, &backbone.tokenizer);
    Ok(())
}

/// What a model is: architecture, vocabulary and special tokens, context, parameters, file, chat template.
pub(super) fn print_summary(dir: &Path, model: &Model, tokenizer: &Tokenizer) {
    let c = model.config();
    let special = tokenizer.special();
    let name = |id: Option<u32>| id.map_or("-".to_string(), |i| i.to_string());
    println!("model        {}", dir.display());
    println!("architecture {}", model.describe());
    println!(
        "vocabulary   {} embeddings; tokenizer {} tokens (bos {}, eos {}, pad {}, unk {})",
        c.vocab_size,
        tokenizer.len(),
        name(special.bos),
        name(special.eos),
        name(special.pad),
        name(special.unk)
    );
    println!("context      {} positions", c.n_positions);
    println!(
        "parameters   {} (frozen), {:?} on {:?}",
        group_thousands(model.num_parameters()),
        model.kind(),
        model.device()
    );
    if let Ok(g) = crate::gguf::Gguf::open(dir) {
        let mut types: Vec<(&str, usize)> = Vec::new();
        for t in g.tensors() {
            match types.iter_mut().find(|(n, _)| *n == t.ty.name()) {
                Some((_, count)) => *count += 1,
                None => types.push((t.ty.name(), 1)),
            }
        }
        let types: Vec<String> = types.iter().map(|(n, k)| format!("{n} ×{k}")).collect();
        println!("file         GGUF v{}: {} (dequantized on load)", g.version, types.join(", "));
    }
    println!("chat         {}", if tokenizer.chat_template().is_some() { "template" } else { "no template" });
}
