//! `ruprompts eval`: zero-shot, k-shot and tuned on a Russian SuperGLUE task or a task file, from a training config
//! or from a prompt.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use clap::Args;

use super::bars::Bars;
use super::decoding::DecodingArgs;
use super::Placement;
use crate::data::{split_file, PreprocessConfig};
use crate::dist::Ranks;
use crate::eval::{evaluate, evaluate_generation, EvalRequest, FewShot, GenerationRequest, Shard, PREDICTIONS_FILE};
use crate::generate::GenerationConfig;
use crate::model::ModelSource;
use crate::progress::{Progress, Silent};
use crate::resolve;
use crate::task::fewshot::{FewShotConfig, Sampler};
use crate::task::{EvalTask, RsgTask, ScoreMode, TaskFile, TaskFormats};
use crate::train::TrainConfig;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A training config: its model, task (dataset.task), validation file, verbalizers and trained prompt
    /// (output_dir) are used. A text2text config is evaluated by generation: chrF and BLEU against the target
    /// field, next to the input copied unchanged.
    #[arg(long, conflicts_with_all = ["task", "task_file", "prompt"])]
    pub config: Option<PathBuf>,
    /// Overrides of config keys, as for `ruprompts train`.
    #[arg(value_name = "KEY=VALUE", requires = "config")]
    pub overrides: Vec<String>,
    /// The task, when no config is given.
    #[arg(long, value_enum, required_unless_present_any = ["config", "task_file"])]
    pub task: Option<RsgTask>,
    /// A multiple-choice task of your own, defined in a YAML task file (data, zero-shot templates, candidates,
    /// gold, metrics; see the book's evaluation page, docs/src/evaluation.md): scored zero-shot with each template, k-shot, and with --prompt.
    #[arg(long, conflicts_with_all = ["task", "formats"])]
    pub task_file: Option<PathBuf>,
    /// A trained prompt's folder (prompt.json + weights); without it only zero-shot is scored.
    #[arg(long)]
    pub prompt: Option<PathBuf>,
    /// The split to score, in the task's official jsonl layout (default with --config: dataset.validation, else
    /// dataset.dir/val.jsonl or val.jsonl.gz; with --task-file its val split).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Model directory or `demo` (default: the config's model, or the one the prompt was trained on).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A task format file like those in prompt_formats/ (default: the bundled one for the task).
    #[arg(long)]
    pub formats: Option<PathBuf>,
    /// The headline score (every mode is computed from the same forwards and reported): sum (lm-eval acc),
    /// per_char (acc_norm), per_byte (acc_bytes), mean_loss (the CPT paper), calibrated. Default: a config's
    /// `objective.score` (its `choice` training score), else sum.
    #[arg(long, value_enum)]
    pub mode: Option<ScoreMode>,
    /// Score each candidate on its own rather than from the shared context's KV cache (same results, slower).
    #[arg(long)]
    pub naive: bool,
    /// Only the first N items.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Folder for report.{md,json,svg} and the request cache (default: <prompt folder>/eval, where `push` finds
    /// it for the model card; eval-<task> for zero-shot only or a prompt from the Hub).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Items scored (or, for text2text, rows generated) together, in order of length.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Also write the predictions in the official submission layout (<Task>.jsonl) into this folder.
    #[arg(long, value_name = "DIR")]
    pub submission: Option<PathBuf>,
    /// Also write <out>/samples/<Task>.jsonl: per item and setting the exact context scored (prompt tokens as
    /// <P>), every candidate's log-likelihood and score in every mode, the predictions and the gold.
    #[arg(long)]
    pub log_samples: bool,
    /// k-shot settings to score next to zero-shot (always scored) and tuned, e.g. `0,1,5`: k solved items of the
    /// few-shot split, formatted like the item with their gold answers, precede it. Default: a config's
    /// fewshot.k.
    #[arg(long, value_delimiter = ',', value_name = "K,...")]
    pub num_fewshot: Vec<usize>,
    /// The split demonstrations are drawn from: a split's name in the data's folder, or a file (default: a
    /// config's fewshot.split, else train).
    #[arg(long, value_name = "SPLIT|FILE")]
    pub fewshot_split: Option<String>,
    /// How demonstrations are drawn: random, balanced (evenly over the gold answers) or first_n.
    #[arg(long, value_enum)]
    pub fewshot_sampler: Option<Sampler>,
    /// Also score the tuned prompt with each k's demonstrations (each formatted by the prompt's template, its soft
    /// tokens around every one): `tuned+5-shot`. On by default for a config trained with fewshot.k.
    #[arg(long)]
    pub tuned_fewshot: bool,
    /// Seed of the demonstrations drawn for each item (default: a config's fewshot.seed, else 1234); several
    /// (`1,2,3`) score each k-shot setting once per seed, and the report gives the spread over them.
    #[arg(long, value_delimiter = ',', value_name = "SEED,...")]
    pub fewshot_seed: Vec<u64>,
    /// Score only part `i` of `n` of the items (every n-th, from the i-th, counting from 0) into
    /// <out>/shards/i-of-n/, for a job scheduler (Slurm arrays, Kubernetes jobs) to run the parts at once; then
    /// the same command with --merge writes the report. Under mpirun each rank is a part by itself.
    #[arg(long, value_name = "i/n", conflicts_with = "merge")]
    pub shard: Option<Shard>,
    /// Write the report from the results of every --shard part under <out>/shards/ (computing nothing: items no
    /// part has scored are an error). The report is the one an unsharded run writes.
    #[arg(long)]
    pub merge: bool,
    /// Put each context in the model's chat template as the user's turn, the answer (or the generated text) after
    /// the assistant's opening, as lm-evaluation-harness's --apply_chat_template does. Default: a config's
    /// prompt_format.chat.
    #[arg(long)]
    pub apply_chat_template: bool,
    #[command(flatten)]
    pub placement: Placement,
    /// How text-to-text configs decode (the prediction is each row's first output: the best beam under beam
    /// search).
    #[command(flatten, next_help_heading = "Decoding (text-to-text configs)")]
    pub decoding: DecodingArgs,
}

/// What `eval` runs: classification of a Russian SuperGLUE task, or generation for a text2text config.
enum Job {
    Classify(Box<EvalRequest>),
    Generate(Box<GenerationRequest>),
}

pub fn run(args: EvalArgs) -> Result<()> {
    let (model, job) = match &args.config {
        Some(path) => job_from_config(&args, path)?,
        None => job_from_task(&args)?,
    };
    // Decoding settings are checked before the model loads, and refused where nothing is generated.
    match &job {
        Job::Generate(request) => request.decoding.validate()?,
        Job::Classify(_) => ensure!(
            !args.decoding.given(),
            "the decoding flags (--max-new-tokens, --num-beams, ...) apply to text-to-text configs, which generate; \
             this evaluation scores answers"
        ),
    }
    // Under mpirun, rank 0 alone shows progress and the report.
    let bars = Bars::default();
    let progress: &dyn Progress = if Ranks::world().is_root() { &bars } else { &Silent };
    let backbone = resolve::backbone(&model, progress).context("model")?;
    let (report, out, written) = match job {
        Job::Classify(request) => (evaluate(&backbone, &request, progress)?, request.out, "report".to_string()),
        Job::Generate(request) => {
            let report = evaluate_generation(&backbone, &request, progress)?;
            (report, request.out, format!("report and {PREDICTIONS_FILE}"))
        }
    };
    match (report, args.shard) {
        (Some(report), _) => {
            println!("{}", report.markdown());
            println!("{written} written to {}", out.display());
        }
        (None, Some(shard)) => println!(
            "shard {shard}: its results are in {}; once every shard is done, run the same command with --merge \
             for the report",
            shard.folder(&out).display()
        ),
        (None, None) => {}
    }
    Ok(())
}

/// The part of the items this run scores: `--shard`, `--merge`, or all.
fn shard(args: &EvalArgs) -> Shard {
    match (args.shard, args.merge) {
        (Some(shard), _) => shard,
        (None, true) => Shard::Merge,
        (None, false) => Shard::All,
    }
}

/// `eval --config`: the config's model, validation split, verbalizers and the prompt trained into its output_dir.
fn job_from_config(args: &EvalArgs, path: &Path) -> Result<(ModelSource, Job)> {
    let config = TrainConfig::load(path, &args.overrides)?;
    let prompt = config.output_dir.clone();
    ensure!(
        prompt.join("prompt.json").is_file(),
        "no trained prompt in {} (output_dir): run `ruprompts train {}` first",
        prompt.display(),
        path.display()
    );
    // The config's model, or --model; either way the placement flags given go over it.
    let model = args.placement.over(match &args.model {
        Some(path) => ModelSource::local(path.clone()),
        None => config.model.clone(),
    });
    let task_val = config.dataset.loaded_task_file.as_ref().and_then(|f| f.split("val"));
    let data = match (&args.data, &config.dataset.validation, &config.dataset.dir, task_val) {
        (Some(d), ..) => d.clone(),
        (None, Some(v), ..) => v.clone(),
        (None, None, Some(dir), _) => split_file(dir, "val"),
        (None, None, None, Some(val)) => val.to_path_buf(),
        (None, None, None, None) => {
            bail!("{}: no dataset.validation, dataset.dir or task file val split; pass --data FILE", path.display())
        }
    };
    let out = args.out.clone().unwrap_or_else(|| prompt.join("eval"));
    if let PreprocessConfig::Text2text { target_field, .. } = &config.preprocessing {
        let request = GenerationRequest {
            name: path.file_stem().map_or("text2text".into(), |s| s.to_string_lossy().into_owned()),
            prompt,
            data,
            target_field: target_field.clone(),
            decoding: args.decoding.over(GenerationConfig { max_new_tokens: 48, ..Default::default() }),
            batch_size: args.batch_size,
            limit: args.limit,
            out,
            shard: shard(args),
            chat: args.apply_chat_template || config.prompt_format.chat,
        };
        return Ok((model, Job::Generate(Box::new(request))));
    }
    let (task, formats) = match config.dataset.eval_task() {
        Some(EvalTask::Rsg(task)) => (EvalTask::Rsg(task), task_formats(task, &args.formats)?),
        Some(EvalTask::File(file)) => (EvalTask::File(file.clone()), file.formats()),
        None => bail!("{}: eval --config needs dataset.task or dataset.task_file", path.display()),
    };
    let formats = config.scoring_formats(formats);
    let mode = args.mode.unwrap_or(config.objective.score_mode());
    let fewshot = fewshot(args, config.fewshot.clone(), config.dataset.dir.as_deref(), &data, &task)?;
    let chat = args.apply_chat_template || config.prompt_format.chat;
    let request = classify_request(args, task, data, formats, Some(prompt), out, mode, fewshot, chat);
    Ok((model, Job::Classify(Box::new(request))))
}

/// `eval --task` or `--task-file`: a data file, the bundled (or given, or the task file's) formats, and the
/// prompt and model named on the command line (the model defaults to the one the prompt was trained on).
fn job_from_task(args: &EvalArgs) -> Result<(ModelSource, Job)> {
    let (task, formats) = match (args.task, &args.task_file) {
        (Some(task), _) => (EvalTask::Rsg(task), task_formats(task, &args.formats)?),
        (None, Some(path)) => {
            let file = TaskFile::load(path)?;
            let formats = file.formats();
            (EvalTask::File(Arc::new(file)), formats)
        }
        (None, None) => unreachable!("clap requires --task or --task-file without --config"),
    };
    let data = match (&args.data, task.split("val")) {
        (Some(d), _) => d.clone(),
        (None, Some(val)) => val,
        (None, None) => bail!("--task needs --data FILE (the split to score)"),
    };
    // A Hub id is pulled once here; the evaluation then reads the snapshot folder.
    let prompt = args.prompt.as_deref().map(|p| resolve::prompt_dir(p, "--prompt")).transpose()?;
    let model = match (&args.model, &prompt) {
        (Some(m), _) => m.clone(),
        (None, Some(p)) => crate::prompt::Prompt::load(p, tch::Device::Cpu)
            .with_context(|| format!("--prompt {}", args.prompt.as_deref().unwrap_or(p).display()))?
            .pretrained_model_name
            .map(PathBuf::from)
            .context("the prompt's prompt.json names no model: pass --model DIR")?,
        (None, None) => bail!("pass --model DIR (or --prompt DIR, whose prompt.json names its model)"),
    };
    let out = args.out.clone().unwrap_or_else(|| match &args.prompt {
        Some(p) if p.is_dir() => p.join("eval"),
        _ => PathBuf::from(format!("eval-{}", task.name())),
    });
    let mode = args.mode.unwrap_or_default();
    let fewshot = fewshot(args, FewShotConfig::default(), None, &data, &task)?;
    let request = classify_request(args, task, data, formats, prompt, out, mode, fewshot, args.apply_chat_template);
    Ok((args.placement.model(model), Job::Classify(Box::new(request))))
}

/// The few-shot settings: `config` with the command line's flags over it; the split is one `task` names (a task
/// file's), else looked up in `dir` (else the evaluated file's folder).
fn fewshot(
    args: &EvalArgs,
    mut config: FewShotConfig,
    dir: Option<&Path>,
    data: &Path,
    task: &EvalTask,
) -> Result<FewShot> {
    if let Some(split) = &args.fewshot_split {
        config.split = split.clone();
    }
    config.sampler = args.fewshot_sampler.unwrap_or(config.sampler);
    let more_seeds = args.fewshot_seed.get(1..).unwrap_or_default().to_vec();
    config.seed = args.fewshot_seed.first().copied().unwrap_or(config.seed);
    let ks = if args.num_fewshot.is_empty() { vec![config.k] } else { args.num_fewshot.clone() };
    if ks.iter().all(|&k| k == 0) {
        return Ok(FewShot { ks, config, data: None, more_seeds, tuned: false });
    }
    let dir = dir.or(data.parent()).unwrap_or(Path::new("."));
    let file = task.split(&config.split).unwrap_or_else(|| config.file(dir));
    ensure!(
        file.is_file(),
        "no few-shot split {} to draw demonstrations from: pass --fewshot-split SPLIT|FILE (fewshot.split)",
        file.display()
    );
    let tuned = args.tuned_fewshot || config.k > 0;
    Ok(FewShot { ks, config, data: Some(file), more_seeds, tuned })
}

/// The classification request both ways share, with the scoring options from the command line.
#[allow(clippy::too_many_arguments)]
fn classify_request(
    args: &EvalArgs,
    task: EvalTask,
    data: PathBuf,
    formats: TaskFormats,
    prompt: Option<PathBuf>,
    out: PathBuf,
    mode: ScoreMode,
    fewshot: FewShot,
    chat: bool,
) -> EvalRequest {
    EvalRequest {
        task,
        data,
        formats,
        prompt,
        mode,
        naive: args.naive,
        batch_size: args.batch_size,
        limit: args.limit,
        out,
        submission: args.submission.clone(),
        log_samples: args.log_samples,
        fewshot,
        shard: shard(args),
        chat,
    }
}

fn task_formats(task: RsgTask, file: &Option<PathBuf>) -> Result<TaskFormats> {
    let Some(path) = file else { return Ok(TaskFormats::bundled(task)) };
    let formats = TaskFormats::load(path)?;
    ensure!(formats.task == Some(task), "{}: formats for {:?}, not {}", path.display(), formats.task, task.name());
    Ok(formats)
}
