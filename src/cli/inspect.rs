//! `ruprompts inspect`: what a prompt's soft tokens are near, how large they are and how far training moved them.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::Args;

use super::bars::Bars;
use crate::device::DeviceChoice;
use crate::model::{Backbone, ModelSource};
use crate::prompt::{inspect, Inspection, Prompt};
use crate::resolve;
use crate::train::{checkpoint, initial_prompt, TrainConfig, CONFIG_FILE};

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The prompt: a training run's output_dir (its config and checkpoints give where each token started and how
    /// far it moved), any prompt folder (ours, ruPrompts', a PEFT adapter), a Hub id owner/name[@rev] or the name
    /// of a prompt ruPrompts published.
    pub prompt: PathBuf,
    /// The model whose vocabulary the tokens are compared with (default: the one the prompt names; `demo` works).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Nearest vocabulary tokens to list per soft token.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// Print the report as JSON (for tools) instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InspectArgs) -> Result<()> {
    anyhow::ensure!(args.top >= 1, "--top must be at least 1");
    let dir = super::generate::prompt_folder(&args.prompt.to_string_lossy(), "the prompt")?;
    let prompt =
        Prompt::load(&dir, tch::Device::Cpu).with_context(|| format!("the prompt {}", args.prompt.display()))?;
    let model_path = match (&args.model, &prompt.pretrained_model_name) {
        (Some(m), _) => m.clone(),
        (None, Some(named)) => PathBuf::from(named),
        (None, None) => return Err(anyhow!("the prompt names no model (config.pretrained_model_name): pass --model")),
    };
    let source = ModelSource { device: DeviceChoice::Cpu, ..ModelSource::local(model_path.clone()) };
    let backbone = resolve::backbone(&source, &Bars::default()).context("--model")?;
    let (start, note) = start_of(&dir, &model_path, &backbone);
    let checkpoints = match start {
        Some(_) => checkpoint::list(&dir)?
            .into_iter()
            .map(|step| Ok((step, Prompt::from_pretrained(&checkpoint::checkpoint_dir(&dir, step), tch::Device::Cpu)?)))
            .collect::<Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    let report = inspect(&prompt, &backbone.model, &backbone.tokenizer, args.top, start.as_ref(), &checkpoints)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&args.prompt, &report, note.as_deref());
    }
    Ok(())
}

/// Where a training run's prompt started, rebuilt from its config.yaml (seed, provider, init_from) on the same
/// model; otherwise `None` and why, in words.
fn start_of(dir: &Path, model_path: &Path, backbone: &Backbone) -> (Option<Prompt>, Option<String>) {
    let config_path = dir.join(CONFIG_FILE);
    if !config_path.is_file() {
        return (
            None,
            Some(format!(
                "no {CONFIG_FILE} here (not a training run's folder): distances from the start are not known"
            )),
        );
    }
    let rebuilt = TrainConfig::load(&config_path, &[]).and_then(|config| {
        anyhow::ensure!(
            config.model.path == model_path,
            "the run trained on {} but {} is inspected",
            config.model.path.display(),
            model_path.display()
        );
        initial_prompt(&config, &backbone.model, &backbone.tokenizer)
    });
    match rebuilt {
        Ok(start) => (Some(start), None),
        Err(e) => (None, Some(format!("the start cannot be rebuilt from {}: {e:#}", config_path.display()))),
    }
}

fn print_table(name: &Path, report: &Inspection, note: Option<&str>) {
    let v = &report.vocab_norms;
    println!(
        "{}: {} provider, format {:?}, {} soft tokens",
        name.display(),
        report.provider,
        report.template,
        report.tokens.len()
    );
    println!("vocabulary norms: min {:.3}, median {:.3}, max {:.3}", v.min, v.median, v.max);
    println!(
        "{:>3}  {:<7} {:>8} {:>6}  {:>8} {:>6}  nearest tokens (cosine)",
        "#", "kind", "norm", "pctl", "moved", "cos"
    );
    for t in &report.tokens {
        let pctl = t.norm_percentile.map_or("-".to_string(), |p| format!("{:.0}%", 100.0 * p));
        let (moved, cos) = t
            .moved
            .as_ref()
            .map_or(("-".into(), "-".into()), |m| (format!("{:.3}", m.distance), format!("{:.2}", m.cosine_to_start)));
        let nearest: Vec<String> = t.nearest.iter().map(|n| format!("{:?} {:.2}", n.token, n.cosine)).collect();
        let nearest =
            if t.kind == "virtual" { "(keys and values in every layer)".to_string() } else { nearest.join(", ") };
        println!("{:>3}  {:<7} {:>8.3} {:>6}  {moved:>8} {cos:>6}  {nearest}", t.index, t.kind, t.norm, pctl);
    }
    if !report.history.is_empty() {
        let steps: Vec<String> =
            report.history.iter().map(|m| format!("step {} {:.3}", m.step, m.mean_distance)).collect();
        println!("mean distance from the start: {}", steps.join(", "));
    }
    if let Some(note) = note {
        println!("{note}");
    }
}
