//! `ruprompts rsg`: train and evaluate the whole Russian SuperGLUE benchmark, print the paper's table.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::bars::Bars;
use super::Placement;
use crate::dist::Ranks;
use crate::progress::{Progress, Silent};
use crate::resolve;
use crate::rsg::{run, RsgRequest};
use crate::task::RsgTask;

#[derive(Debug, Args)]
pub struct RsgArgs {
    /// Model directory, Hub id or `demo`.
    #[arg(long)]
    pub model: PathBuf,
    /// The benchmark in its official layout: <Task>/train.jsonl, val.jsonl, test.jsonl (or .jsonl.gz) for any of
    /// DaNetQA, TERRa, RCB, PARus, MuSeRC, RuCoS, RUSSE, RWSD; LiDiRus/LiDiRus.jsonl.
    #[arg(long)]
    pub data: PathBuf,
    /// Only these tasks (comma-separated, e.g. `terra,lidirus`); default: all nine.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub tasks: Vec<RsgTask>,
    /// Folder of <task>.yaml training configs (default: the built-in src/rsg/configs, copied to OUT/configs).
    #[arg(long)]
    pub config_dir: Option<PathBuf>,
    /// Where prompts, evaluations and report.{md,json,svg} go.
    #[arg(long, default_value = "runs/rsg")]
    pub out: PathBuf,
    /// Also predict the test splits: OUT/submission/<Task>.jsonl and OUT/submission.zip for the leaderboard.
    #[arg(long)]
    pub submission: bool,
    /// Items scored together in evaluation.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Replace finished results in --out that were made with another config, model or data (without it such a
    /// run is refused before any task starts; results made the same way are always kept).
    #[arg(long)]
    pub overwrite: bool,
    /// Overrides of every task's config, as for `ruprompts train` (e.g. training.max_steps=2000).
    #[arg(value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    #[command(flatten)]
    pub placement: Placement,
}

pub fn run_rsg(args: RsgArgs) -> Result<()> {
    anyhow::ensure!(args.data.is_dir(), "--data {}: not a folder", args.data.display());
    anyhow::ensure!(args.batch_size >= 1, "--batch-size must be at least 1");
    // Under mpirun, rank 0 alone shows progress and the table.
    let bars = Bars::default();
    let progress: &dyn Progress = if Ranks::world().is_root() { &bars } else { &Silent };
    let backbone = resolve::backbone(&args.placement.model(args.model.clone()), progress).context("model")?;
    let tasks = if args.tasks.is_empty() { RsgTask::ALL.to_vec() } else { args.tasks.clone() };
    let request = RsgRequest {
        model: args.model.display().to_string(),
        data: args.data,
        tasks,
        config_dir: args.config_dir,
        overrides: args.overrides,
        out: args.out,
        submission: args.submission,
        batch_size: args.batch_size,
        overwrite: args.overwrite,
    };
    let Some(bench) = run(&backbone, &request, progress)? else { return Ok(()) };
    println!("{}", bench.markdown());
    println!("report written to {}", request.out.display());
    let failed: Vec<&str> = bench.tasks.iter().filter(|t| t.error.is_some()).map(|t| t.task.name()).collect();
    anyhow::ensure!(
        failed.is_empty(),
        "{} of {} tasks failed ({}): see the table",
        failed.len(),
        bench.tasks.len(),
        failed.join(", ")
    );
    if request.submission {
        println!("submission: {}", request.out.join("submission.zip").display());
    }
    Ok(())
}
