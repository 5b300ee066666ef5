//! `ruprompts export`: a prompt in another tool's layout.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::prompt::{Prompt, PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE};

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write a PEFT adapter (adapter_config.json + adapter_model.safetensors): PREFIX_TUNING for a prefix prompt,
    /// PROMPT_TUNING for the others, the provider's output baked in. Loads with
    /// `PeftModel.from_pretrained(model, OUT)`.
    #[arg(long)]
    pub peft: bool,
    /// The prompt: a folder (ours, ruPrompts' or a PEFT adapter), a Hub id owner/name[@rev] or the name of a
    /// prompt ruPrompts published (pretrained_prompts/).
    pub prompt: PathBuf,
    /// The folder to write into (created if needed; other files in it are left alone).
    pub out: PathBuf,
    /// Replace an adapter already in the folder (without it, such a folder is refused).
    #[arg(long)]
    pub overwrite: bool,
}

pub fn run(args: ExportArgs) -> Result<()> {
    anyhow::ensure!(args.peft, "say which layout to export to: --peft (the only one so far)");
    let existing: Vec<&str> =
        [PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE].into_iter().filter(|f| args.out.join(f).exists()).collect();
    anyhow::ensure!(
        existing.is_empty() || args.overwrite,
        "{} already holds an adapter ({}): pass --overwrite to replace it, or export into another folder",
        args.out.display(),
        existing.join(", ")
    );
    let dir = super::generate::prompt_folder(&args.prompt.to_string_lossy(), "the prompt")?;
    let prompt =
        Prompt::load(&dir, tch::Device::Cpu).with_context(|| format!("the prompt {}", args.prompt.display()))?;
    prompt
        .save_peft(&args.out)
        .with_context(|| format!("cannot export {} as a PEFT adapter", args.prompt.display()))?;
    println!("wrote {} and {} in {}", PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE, args.out.display());
    Ok(())
}
