//! `ruprompts train`: a prompt trained from a YAML config (or a run resumed), and what it reached.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::bars::Bars;
use super::numbers::group_thousands;
use crate::dist::Ranks;
use crate::progress::{Progress, Silent};
use crate::resolve;
use crate::train::{self, TrainConfig, TrainOptions};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The YAML config (see examples/configs/); not needed with --resume.
    #[arg(required_unless_present = "resume")]
    pub config: Option<PathBuf>,
    /// Overrides of config keys, e.g. training.batch_size=4 optimizer.lr=3e-2 (values are YAML).
    #[arg(value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Continue the run in this output folder from its last complete checkpoint (its config.yaml is used,
    /// with any KEY=VALUE overrides on top).
    #[arg(long, value_name = "OUTPUT_DIR")]
    pub resume: Option<PathBuf>,
    /// Replace a run already in the output folder (without it, such a folder is refused).
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Stop after this many updates now; `--resume` continues later.
    #[arg(long, value_name = "N")]
    pub max_updates_now: Option<usize>,
}

pub fn run(args: TrainArgs) -> Result<()> {
    let (config, resume) = match (&args.resume, &args.config) {
        (Some(dir), first) => {
            // With --resume every positional is an override (clap takes the first for the config).
            let mut overrides: Vec<String> = first.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            overrides.extend(args.overrides.iter().cloned());
            if let Some(bad) = overrides.iter().find(|o| !o.contains('=')) {
                bail!("with --resume the run's own config.yaml is used; `{bad}` is not a KEY=VALUE override");
            }
            (train::resume_config(dir, &overrides)?, true)
        }
        (None, Some(path)) => (TrainConfig::load(path, &args.overrides)?, false),
        (None, None) => bail!("give a config file, or --resume OUTPUT_DIR"),
    };
    // Under mpirun, rank 0 alone shows progress and the summary.
    let root = Ranks::world().is_root();
    let bars = Bars::default();
    let progress: &dyn Progress = if root { &bars } else { &Silent };
    let backbone = resolve::backbone(&config.model, progress).context("model.path")?;
    let options = TrainOptions { resume, overwrite: args.overwrite, max_updates_now: args.max_updates_now };
    let report = train::train(&config, &backbone, &options, progress)?;
    if !root {
        return Ok(());
    }
    println!(
        "{} updates of {} ({} trainable parameters) in {:.1} s, {:.2} updates/s",
        report.steps,
        report.total_steps,
        group_thousands(report.trainable_parameters),
        report.seconds,
        report.steps_per_sec
    );
    if let Some(loss) = report.losses.last() {
        println!("last training loss {loss:.4}");
    }
    if let Some(loss) = report.eval_loss {
        println!("eval loss {loss:.4}");
    }
    if let (Some(best), Some(step)) = (report.best_metric, report.best_step) {
        let kept = match config.training.final_prompt {
            train::FinalPrompt::Best => "the final prompt",
            train::FinalPrompt::Last => "checkpoint kept; the final prompt is the last update's",
        };
        println!("best validation {} {best:.4} at update {step} ({kept})", report.eval_metric);
    }
    if report.stopped_early {
        println!(
            "stopped early at update {}: no better {} in {} evaluations",
            report.steps,
            report.eval_metric,
            config.training.early_stopping_patience.unwrap_or_default()
        );
    }
    if report.steps == report.total_steps || report.stopped_early {
        println!("prompt, metrics.jsonl and loss.svg saved in {}", report.output_dir.display());
    } else {
        println!("stopped at a checkpoint; continue with: ruprompts train --resume {}", report.output_dir.display());
    }
    Ok(())
}
