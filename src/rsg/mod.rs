//! `ruprompts rsg`: the whole Russian SuperGLUE benchmark for one backbone. Per task a prompt is trained from its
//! config (`src/rsg/configs/`, built in) and scored zero-shot and tuned on the validation split; LiDiRus is
//! scored with the TERRa prompt, as the leaderboard does. Work already done with the same model, config and data
//! is kept, a killed run continues where it stopped, and a failed task is reported without stopping the others.

mod table;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub use table::{task_score, total_score, Benchmark, TaskOutcome};

use crate::data::split_file;
use crate::dist::Ranks;
use crate::eval::{evaluate, EvalRequest, Report, Shard};
use crate::fs::{write_atomic, DirLock};
use crate::model::Backbone;
use crate::progress::Progress;
use crate::task::{RsgTask, TaskFormats};
use crate::train::checkpoint::{self, TRAINER_STATE_FILE};
use crate::train::{train, TrainConfig, TrainOptions, CONFIG_FILE};

/// The task configs `ruprompts rsg` uses unless given `--config-dir`: `src/rsg/configs/`, built in (their own home: editing an example
/// does not change the benchmark).
pub const BUNDLED_CONFIGS: [(&str, &str); 9] = [
    ("base.yaml", include_str!("configs/base.yaml")),
    ("danetqa.yaml", include_str!("configs/danetqa.yaml")),
    ("terra.yaml", include_str!("configs/terra.yaml")),
    ("rcb.yaml", include_str!("configs/rcb.yaml")),
    ("parus.yaml", include_str!("configs/parus.yaml")),
    ("muserc.yaml", include_str!("configs/muserc.yaml")),
    ("rucos.yaml", include_str!("configs/rucos.yaml")),
    ("russe.yaml", include_str!("configs/russe.yaml")),
    ("rwsd.yaml", include_str!("configs/rwsd.yaml")),
];

/// What to run and where.
#[derive(Debug, Clone)]
pub struct RsgRequest {
    /// The model as the user named it (written into each config's `model.path` and the prompts).
    pub model: String,
    /// The official layout: `<Task>/train.jsonl`, `val.jsonl`, `test.jsonl` (or `.jsonl.gz`), any subset of tasks;
    /// LiDiRus as `LiDiRus/LiDiRus.jsonl` or `LiDiRus/test.jsonl`.
    pub data: PathBuf,
    pub tasks: Vec<RsgTask>,
    /// Folder of `<task>.yaml` configs; default: the built-in ones, written to `<out>/configs`.
    pub config_dir: Option<PathBuf>,
    /// `key=value` overrides applied to every task's config.
    pub overrides: Vec<String>,
    pub out: PathBuf,
    /// Also predict the test splits and write the leaderboard's submission (`<out>/submission.zip`).
    pub submission: bool,
    /// Items scored together in evaluation.
    pub batch_size: usize,
    /// Replace finished results made with another config, model or data (otherwise refused before any task).
    pub overwrite: bool,
}

/// What `<out>/<Task>/outcome.json` holds: the outcome and a digest of what produced it.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    fingerprint: String,
    outcome: TaskOutcome,
}

const OUTCOME_FILE: &str = "outcome.json";

/// Runs the benchmark on `backbone` (the model `request.model` names) and writes report.{md,json,svg} into
/// `request.out`. Under `mpirun` every rank runs it: training and evaluation split their work over the ranks, rank
/// 0 alone writes and returns the benchmark (the others `None`), and a task that fails ends the job, since the
/// ranks would otherwise part ways in their collective calls.
pub fn run(backbone: &Backbone, request: &RsgRequest, progress: &dyn Progress) -> Result<Option<Benchmark>> {
    let ranks = Ranks::world();
    let _lock = if ranks.is_root() {
        std::fs::create_dir_all(&request.out).with_context(|| format!("cannot create {}", request.out.display()))?;
        Some(DirLock::acquire(&request.out, "the benchmark folder")?)
    } else {
        None
    };
    let config_dir = match &request.config_dir {
        Some(dir) => dir.clone(),
        None if ranks.is_root() => write_bundled_configs(&request.out.join("configs"))?,
        None => request.out.join("configs"),
    };
    ranks.barrier();
    // TERRa first: LiDiRus is scored with its prompt.
    let mut order = request.tasks.clone();
    order.sort_by_key(|t| (*t == RsgTask::Lidirus, RsgTask::ALL.iter().position(|x| x == t)));
    order.dedup();
    check_before_running(backbone, request, &config_dir, &order)?;
    let mut outcomes = Vec::new();
    for task in order {
        progress.warn(&format!("rsg: {}", task.name()));
        let started = Instant::now();
        let outcome = match run_task(backbone, request, &config_dir, task, progress) {
            Ok(outcome) => outcome,
            Err(e) if ranks.size > 1 => return Err(e.context(format!("rsg: {}", task.name()))),
            Err(e) => Some(TaskOutcome {
                task,
                zero_shot: vec![],
                tuned: vec![],
                items: 0,
                trainable_parameters: None,
                seconds: started.elapsed().as_secs_f64(),
                error: Some(format!("{e:#}")),
            }),
        };
        // Rank 0's outcome is on disk before any rank goes on (LiDiRus reads TERRa's).
        ranks.barrier();
        if let Some(e) = outcome.as_ref().and_then(|o| o.error.as_ref()) {
            progress.warn(&format!("rsg: {} failed: {e}", task.name()));
        }
        outcomes.extend(outcome);
    }
    if !ranks.is_root() {
        return Ok(None);
    }
    if request.submission {
        write_zip(&request.out.join("submission"), &request.out.join("submission.zip"))?;
    }
    let bench = Benchmark::new(request.model.clone(), outcomes);
    if bench.tasks.iter().all(|t| t.error.is_some()) && holds_results(&request.out) {
        progress.warn(&format!(
            "rsg: no task has a result in this run, so the report in {} (which has results) is kept as it was",
            request.out.display()
        ));
    } else {
        bench.write(&request.out)?;
    }
    Ok(Some(bench))
}

/// Whether `out` holds a benchmark report with at least one task's result.
fn holds_results(out: &Path) -> bool {
    std::fs::read_to_string(out.join(crate::report::REPORT_JSON))
        .ok()
        .and_then(|text| serde_json::from_str::<Benchmark>(&text).ok())
        .is_some_and(|b| b.tasks.iter().any(|t| t.error.is_none()))
}

/// Checks the whole command line before any task runs: every task's config loads with the overrides (a stray
/// argument is one error, not nine failed tasks), and no finished result made with another config, model or
/// data would be replaced unless `--overwrite` says so. A task without data is left to fail in the table.
fn check_before_running(backbone: &Backbone, request: &RsgRequest, config_dir: &Path, order: &[RsgTask]) -> Result<()> {
    let mut conflicts = Vec::new();
    for &task in order.iter().filter(|t| **t != RsgTask::Lidirus) {
        let task_out = request.out.join(task.name());
        let config = task_config(request, config_dir, task, &task_out)?;
        if request.overwrite {
            continue;
        }
        let config_text = serde_yaml::to_string(&config)?;
        let prompt_dir = &config.output_dir;
        let trained = prompt_dir.join(TRAINER_STATE_FILE).is_file()
            || (prompt_dir.is_dir() && !checkpoint::list(prompt_dir)?.is_empty());
        let other_config = std::fs::read_to_string(prompt_dir.join(CONFIG_FILE)).is_ok_and(|t| t != config_text);
        let other_outcome = match task_fingerprint(backbone, &config_text, &request.data.join(task.name())) {
            Ok(fingerprint) => stored_any(&task_out).is_some_and(|s| s.fingerprint != fingerprint),
            Err(_) => false,
        };
        if (trained && other_config) || other_outcome {
            conflicts.push(task.name());
        }
    }
    if !conflicts.is_empty() {
        bail!(
            "{} in {} hold{} results made with another config, model or data, which this run would replace: pass \
             --overwrite to replace them, or --out another folder to keep both",
            conflicts.join(", "),
            request.out.display(),
            if conflicts.len() == 1 { "s" } else { "" }
        );
    }
    Ok(())
}

/// What a task's result depends on: its config, the model's dtype and the data files (path, size, time).
fn task_fingerprint(backbone: &Backbone, config_text: &str, data_dir: &Path) -> Result<String> {
    let (train_file, val_file) = (find_split(data_dir, &["train"])?, find_split(data_dir, &["val"])?);
    crate::eval::fingerprint(
        &[config_text, &format!("{:?}", backbone.source.dtype), &file_marks(&[&train_file, &val_file])?],
        None,
    )
}

/// Writes the built-in configs into `dir` (replacing older copies) and returns it.
fn write_bundled_configs(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, text) in BUNDLED_CONFIGS {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
            write_atomic(&path, |p| Ok(std::fs::write(p, text)?))?;
        }
    }
    Ok(dir.to_path_buf())
}

/// Path, size and modification time of each file: enough to tell data that changed.
fn file_marks(files: &[&Path]) -> Result<String> {
    let mut marks = String::new();
    for f in files {
        let meta = std::fs::metadata(f).with_context(|| format!("cannot read {}", f.display()))?;
        let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        marks += &format!("{}:{}:{:?};", f.display(), meta.len(), modified.map(|d| d.as_nanos()));
    }
    Ok(marks)
}

/// The outcome stored in `dir`, if it has one without error.
fn stored_any(dir: &Path) -> Option<Stored> {
    let text = std::fs::read_to_string(dir.join(OUTCOME_FILE)).ok()?;
    let stored: Stored = serde_json::from_str(&text).ok()?;
    stored.outcome.error.is_none().then_some(stored)
}

/// The stored outcome in `dir` when it was made under `fingerprint` without error.
fn stored(dir: &Path, fingerprint: &str) -> Option<TaskOutcome> {
    stored_any(dir).filter(|s| s.fingerprint == fingerprint).map(|s| s.outcome)
}

fn store(dir: &Path, fingerprint: String, outcome: &TaskOutcome) -> Result<()> {
    let text = serde_json::to_string_pretty(&Stored { fingerprint, outcome: outcome.clone() })?;
    write_atomic(&dir.join(OUTCOME_FILE), |p| Ok(std::fs::write(p, text)?))
}

/// The first of `names` (each also as `.jsonl.gz`) that exists in `dir`.
fn find_split(dir: &Path, names: &[&str]) -> Result<PathBuf> {
    names.iter().map(|n| split_file(dir, n)).find(|p| p.is_file()).with_context(|| {
        format!(
            "{} has none of {}",
            dir.display(),
            names.iter().map(|n| format!("{n}.jsonl")).collect::<Vec<_>>().join(", ")
        )
    })
}

/// The config of `task` with the benchmark's settings and the user's overrides on top.
fn task_config(request: &RsgRequest, config_dir: &Path, task: RsgTask, task_out: &Path) -> Result<TrainConfig> {
    let name = format!("{task:?}").to_lowercase();
    let path = config_dir.join(format!("{name}.yaml"));
    let mut overrides = vec![
        format!("model.path={}", request.model),
        format!("dataset.dir={}", request.data.join(task.name()).display()),
        format!("output_dir={}", task_out.join("prompt").display()),
    ];
    overrides.extend(request.overrides.iter().cloned());
    let config = TrainConfig::load(&path, &overrides)?;
    if config.dataset.task != Some(task) {
        bail!("{}: dataset.task should be {name}", path.display());
    }
    Ok(config)
}

/// Trains (or resumes, or keeps) the prompt of `task` and scores it zero-shot and tuned on its validation split.
fn run_task(
    backbone: &Backbone,
    request: &RsgRequest,
    config_dir: &Path,
    task: RsgTask,
    progress: &dyn Progress,
) -> Result<Option<TaskOutcome>> {
    let task_out = request.out.join(task.name());
    std::fs::create_dir_all(&task_out).with_context(|| format!("cannot create {}", task_out.display()))?;
    if task == RsgTask::Lidirus {
        return run_lidirus(backbone, request, config_dir, progress);
    }
    let config = task_config(request, config_dir, task, &task_out)?;
    let data_dir = request.data.join(task.name());
    let config_text = serde_yaml::to_string(&config)?;
    let fingerprint = task_fingerprint(backbone, &config_text, &data_dir)?;
    let val_file = find_split(&data_dir, &["val"])?;
    kept_or(request, task, fingerprint, || {
        let prompt_dir = &config.output_dir;
        let same_config = std::fs::read_to_string(prompt_dir.join(CONFIG_FILE)).ok().as_deref() == Some(&config_text);
        let finished = same_config && prompt_dir.join(TRAINER_STATE_FILE).is_file();
        if !finished {
            let resume = same_config && prompt_dir.is_dir() && !checkpoint::list(prompt_dir)?.is_empty();
            let options = TrainOptions { resume, overwrite: !resume, max_updates_now: None };
            train(&config, backbone, &options, progress).context("training")?;
        }
        let formats = config.scoring_formats(TaskFormats::bundled(task));
        let eval = |data: PathBuf, out: &str, submission: Option<PathBuf>| EvalRequest {
            task: task.into(),
            data,
            formats: formats.clone(),
            prompt: Some(prompt_dir.clone()),
            mode: config.objective.score_mode(),
            naive: false,
            batch_size: request.batch_size,
            limit: None,
            out: task_out.join(out),
            submission,
            log_samples: false,
            fewshot: Default::default(),
            shard: Shard::All,
            chat: false,
        };
        let report = evaluate(backbone, &eval(val_file, "eval", None), progress).context("evaluation")?;
        if request.submission {
            let test = find_split(&data_dir, &["test"])?;
            evaluate(backbone, &eval(test, "test", Some(request.out.join("submission"))), progress)
                .context("test split")?;
        }
        Ok(report)
    })
}

/// LiDiRus scored with the TERRa prompt (its items carry TERRa's field names) and TERRa's verbalizers.
fn run_lidirus(
    backbone: &Backbone,
    request: &RsgRequest,
    config_dir: &Path,
    progress: &dyn Progress,
) -> Result<Option<TaskOutcome>> {
    let task_out = request.out.join(RsgTask::Lidirus.name());
    let terra_out = request.out.join(RsgTask::Terra.name());
    let terra = task_config(request, config_dir, RsgTask::Terra, &terra_out)?;
    let prompt_dir = terra.output_dir.clone();
    let Some(terra_done) = stored_any(&terra_out) else {
        bail!("LiDiRus is scored with the TERRa prompt: run TERRa too (it has no result in {})", terra_out.display())
    };
    let data = find_split(&request.data.join(RsgTask::Lidirus.name()), &["LiDiRus", "test"])?;
    let fingerprint = crate::eval::fingerprint(&[&terra_done.fingerprint, &file_marks(&[&data])?], None)?;
    let formats = terra.scoring_formats(TaskFormats::bundled(RsgTask::Lidirus));
    // An unlabelled file without --submission is refused by `evaluate`: there is nothing to score.
    let eval = EvalRequest {
        task: RsgTask::Lidirus.into(),
        data,
        formats,
        prompt: Some(prompt_dir),
        mode: terra.objective.score_mode(),
        naive: false,
        batch_size: request.batch_size,
        limit: None,
        out: task_out.join("eval"),
        submission: request.submission.then(|| request.out.join("submission")),
        log_samples: false,
        fewshot: Default::default(),
        shard: Shard::All,
        chat: false,
    };
    kept_or(request, RsgTask::Lidirus, fingerprint, || evaluate(backbone, &eval, progress).context("evaluation"))
}

/// The outcome of `task` kept in its folder under `fingerprint` (unless a submission is asked, which needs the
/// test predictions written), else the outcome of the report `work` makes, timed and kept for the next run.
/// `None` on an MPI rank other than 0, whose evaluation makes no report.
fn kept_or(
    request: &RsgRequest,
    task: RsgTask,
    fingerprint: String,
    work: impl FnOnce() -> Result<Option<Report>>,
) -> Result<Option<TaskOutcome>> {
    let task_out = request.out.join(task.name());
    if let Some(outcome) = stored(&task_out, &fingerprint).filter(|_| !request.submission) {
        return Ok(Some(outcome));
    }
    let started = Instant::now();
    let Some(report) = work()? else { return Ok(None) };
    let outcome = outcome_of(task, &report, started.elapsed().as_secs_f64());
    store(&task_out, fingerprint, &outcome)?;
    Ok(Some(outcome))
}

/// A task's outcome from its evaluation report.
fn outcome_of(task: RsgTask, report: &crate::report::Report, seconds: f64) -> TaskOutcome {
    let t = &report.tasks[0];
    let metric = |name: &str, value: f64, stderr: Option<f64>| crate::task::Metric { name: name.into(), value, stderr };
    TaskOutcome {
        task,
        zero_shot: t.metrics.iter().map(|m| metric(&m.metric, m.zero_shot, m.zero_shot_stderr)).collect(),
        tuned: t.metrics.iter().filter_map(|m| Some(metric(&m.metric, m.tuned?, m.tuned_stderr))).collect(),
        items: t.items,
        trainable_parameters: t.trainable_parameters,
        seconds,
        error: None,
    }
}

/// Zips the submission files of `dir` (`<Task>.jsonl`, at the archive's root, as the leaderboard takes them).
fn write_zip(dir: &Path, zip_path: &Path) -> Result<()> {
    use std::io::Write;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("no submission files in {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    write_atomic(zip_path, |p| {
        let mut zip = zip::ZipWriter::new(std::fs::File::create(p)?);
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for f in &files {
            let name = f.file_name().and_then(|n| n.to_str()).context("a submission file name is not UTF-8")?;
            zip.start_file(name, options)?;
            zip.write_all(&std::fs::read(f)?)?;
        }
        zip.finish()?;
        Ok(())
    })
}
