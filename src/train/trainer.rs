//! The training loop: a frozen model, one trainable prompt, AdamW on the prompt's parameters only, logging,
//! evaluation, checkpoints, and resuming a run exactly where its last checkpoint left it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use tch::Tensor;

use super::checkpoint::{self, TrainerState, TRAINER_STATE_FILE};
use super::run_log::{self, METRICS_FILE, PLOT_FILE};
use super::setup::{setup, Setup};
use super::AdamW;
use super::TrainConfig;
use super::{FinalPrompt, LOSS_METRIC};
use crate::data::epoch_batches;
use crate::dist::Ranks;
use crate::fs::write_atomic;
use crate::fs::DirLock;
use crate::model::{Backbone, Quantize};
use crate::progress::Progress;
use crate::prompt::PROMPT_FILE;

/// The resolved config of a run, written into its output folder (and read back by `--resume`).
pub const CONFIG_FILE: &str = "config.yaml";

/// How this invocation runs (not part of the config: the same run may be resumed with other options).
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Continue from the last complete checkpoint in the output folder.
    pub resume: bool,
    /// Stop after this many updates in this invocation (a later `--resume` continues).
    pub max_updates_now: Option<usize>,
    /// Replace a run already in the output folder (else such a folder is refused).
    pub overwrite: bool,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    pub output_dir: PathBuf,
    /// Updates done in total (including those before a resume).
    pub steps: usize,
    pub total_steps: usize,
    /// Training loss of every update this invocation made, in order.
    pub losses: Vec<f64>,
    pub eval_loss: Option<f64>,
    /// The figure that picks the best checkpoint, its best value and the step it was reached at.
    pub eval_metric: String,
    pub best_metric: Option<f64>,
    pub best_step: Option<usize>,
    /// The run stopped before its last step: `early_stopping_patience` evaluations without improvement.
    pub stopped_early: bool,
    /// Updates per second in this invocation, and wall time.
    pub steps_per_sec: f64,
    pub seconds: f64,
    pub trainable_parameters: i64,
}

/// Files that mark a folder as holding a run (besides `checkpoint-<step>/` folders).
const RUN_FILES: [&str; 5] = [CONFIG_FILE, METRICS_FILE, PLOT_FILE, TRAINER_STATE_FILE, PROMPT_FILE];

/// Runs (or resumes) the training that `config` describes on `backbone` (the model `config.model` names,
/// loaded by the caller), reporting to `progress`. Nothing is written before the config is valid and the data is
/// encoded. Under `mpirun` every rank calls this: each takes its share of every batch, the gradients are summed
/// over the ranks, and rank 0 alone writes the output folder.
pub fn train(
    config: &TrainConfig,
    backbone: &Backbone,
    options: &TrainOptions,
    progress: &dyn Progress,
) -> Result<TrainReport> {
    config.validate()?;
    ensure!(
        backbone.model.quantized() == Quantize::None,
        "the model is stored as {}: training needs its own weights (gradients do not flow through quantized layers)",
        backbone.model.quantized()
    );
    let setup = setup(config, backbone, progress)?;
    let ranks = Ranks::world();
    let (lock, resume_from) = open_output_on_root(&config.output_dir, options, &ranks)?;
    let out = &config.output_dir;
    let mut trainer = Trainer::start(config, setup, resume_from, ranks)?;
    if ranks.is_root() {
        write_atomic(&out.join(CONFIG_FILE), |p| Ok(std::fs::write(p, serde_yaml::to_string(config)?)?))?;
    }
    progress.start("training", trainer.total as u64, trainer.state.step as u64);
    let start = Instant::now();
    let first = trainer.state.step;
    let end = options.max_updates_now.map_or(trainer.total, |n| (first + n).min(trainer.total));
    while trainer.state.step < end && !trainer.state.stopped_early {
        let update = trainer.step()?;
        trainer.after_step(&update)?;
        progress.advance(1, &format!("loss {:.4} lr {:.2e}", update.loss, update.lr));
    }
    progress.finish();
    let seconds = start.elapsed().as_secs_f64();
    trainer.finish()?;
    // Every rank returns once rank 0 has written the output (what follows may read the prompt back).
    ranks.barrier();
    drop(lock);
    Ok(TrainReport {
        output_dir: out.clone(),
        steps: trainer.state.step,
        total_steps: trainer.total,
        steps_per_sec: (trainer.state.step - first) as f64 / seconds.max(1e-9),
        seconds,
        losses: trainer.losses,
        eval_loss: trainer.last_eval,
        eval_metric: config.eval_metric().to_string(),
        best_metric: trainer.state.best_metric,
        best_step: trainer.state.best_step,
        stopped_early: trainer.state.stopped_early,
        trainable_parameters: trainer.setup.prompt.num_parameters(),
    })
}

/// [`open_output`] on rank 0, which tells the other ranks the checkpoint to resume from; they hold no lock.
fn open_output_on_root(out: &Path, options: &TrainOptions, ranks: &Ranks) -> Result<(Option<DirLock>, Option<usize>)> {
    const NONE: i64 = -1;
    const FAILED: i64 = -2;
    if !ranks.is_root() {
        return match ranks.broadcast_i64(0) {
            FAILED => bail!("rank 0 could not open output_dir {} (its error says why)", out.display()),
            NONE => Ok((None, None)),
            step => Ok((None, Some(step as usize))),
        };
    }
    let opened = open_output(out, options);
    let code = match &opened {
        Ok((_, Some(step))) => *step as i64,
        Ok((_, None)) => NONE,
        Err(_) => FAILED,
    };
    ranks.broadcast_i64(code);
    let (lock, resume_from) = opened?;
    Ok((Some(lock), resume_from))
}

/// Creates and locks `out`, and says which checkpoint to resume from. Without `resume`, a folder that already
/// holds a run is refused, or with `overwrite` replaced: the old folder is renamed away in one step, and deleted
/// once the new one is in place and locked.
fn open_output(out: &Path, options: &TrainOptions) -> Result<(DirLock, Option<usize>)> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create output_dir {}", out.display()))?;
    let lock = DirLock::acquire(out, "output_dir")?;
    let existing = checkpoint::list(out)?;
    if options.resume {
        let step = existing.last().copied();
        let step = step.with_context(|| format!("nothing to resume: {} has no complete checkpoint", out.display()))?;
        return Ok((lock, Some(step)));
    }
    let mut held: Vec<String> = RUN_FILES.iter().filter(|f| out.join(f).exists()).map(|f| f.to_string()).collect();
    held.extend(existing.iter().map(|step| format!("checkpoint-{step}")));
    if held.is_empty() {
        return Ok((lock, None));
    }
    if !options.overwrite {
        bail!(
            "output_dir {} already holds a run ({}); resume it with --resume, replace it with --overwrite, or \
             choose another output_dir",
            out.display(),
            held.join(", ")
        );
    }
    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("run");
    let old = out.with_file_name(format!(".{name}.replaced"));
    if old.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("cannot delete {}", old.display()))?;
    }
    std::fs::rename(out, &old).with_context(|| format!("cannot move {} aside to replace it", out.display()))?;
    // Released before the new folder exists: dropping it later would delete the new folder's lock file.
    drop(lock);
    std::fs::create_dir(out).with_context(|| format!("cannot create output_dir {}", out.display()))?;
    let new_lock = DirLock::acquire(out, "output_dir")?;
    std::fs::remove_dir_all(&old).with_context(|| format!("cannot delete the replaced run {}", old.display()))?;
    Ok((new_lock, None))
}

/// The loop's state: the setup, the optimizer, where the run stands and what it has logged.
struct Trainer<'a> {
    config: &'a TrainConfig,
    setup: Setup<'a>,
    optimizer: AdamW,
    state: TrainerState,
    total: usize,
    batches_per_epoch: usize,
    lengths: Vec<usize>,
    epoch_cache: Option<(usize, Vec<Vec<usize>>)>,
    /// The metrics log, written by rank 0 alone.
    log: Option<crate::fs::JsonLines>,
    ranks: Ranks,
    losses: Vec<f64>,
    window: Vec<f64>,
    last_eval: Option<f64>,
}

impl<'a> Trainer<'a> {
    /// The optimizer over the prompt's parameters, restored from checkpoint `resume_from` when given; the
    /// metrics log opened (and, on a fresh run, the eval loss before training logged as step 0).
    fn start(config: &'a TrainConfig, mut setup: Setup<'a>, resume_from: Option<usize>, ranks: Ranks) -> Result<Self> {
        let t = &config.training;
        let out = &config.output_dir;
        let lengths = setup.train.lengths();
        let batches_per_epoch = setup.train.len().div_ceil(t.batch_size);
        let total = t.max_steps.unwrap_or(t.epochs * batches_per_epoch.div_ceil(t.grad_accumulation));
        ensure!(total > 0, "nothing to train: training.max_steps (or epochs) is 0");
        let params: Vec<(String, Tensor)> = setup.prompt.var_store().variables().into_iter().collect();
        let mut optimizer = AdamW::new(config.optimizer.clone(), params);
        let mut state = TrainerState {
            step: 0,
            total_steps: total,
            eval_metric: config.eval_metric().to_string(),
            best_metric: None,
            best_step: None,
            evals_since_best: 0,
            stopped_early: false,
        };
        if let Some(step) = resume_from {
            let dir = checkpoint::checkpoint_dir(out, step);
            checkpoint::load_prompt(&dir, &mut setup.prompt)?;
            state = checkpoint::load_into(&dir, &mut optimizer)?;
            ensure!(
                state.eval_metric == config.eval_metric(),
                "checkpoint {} picks its best by {}, the config now by {}",
                dir.display(),
                state.eval_metric,
                config.eval_metric()
            );
            ensure!(
                state.total_steps == total,
                "checkpoint {} was made for {} steps, the config now gives {total}",
                dir.display(),
                state.total_steps
            );
        }
        let log = ranks.is_root().then(|| run_log::open_log(out, resume_from)).transpose()?;
        if resume_from.is_none() {
            if let (Some(record), Some(log)) = (validation_record(&setup, 0, t.batch_size, &ranks)?, &log) {
                log.append(&record.line)?;
            }
        }
        Ok(Self {
            config,
            setup,
            optimizer,
            state,
            total,
            batches_per_epoch,
            lengths,
            epoch_cache: None,
            log,
            ranks,
            losses: Vec::new(),
            window: Vec::new(),
            last_eval: None,
        })
    }

    /// One update: `grad_accumulation` batches forward and backward, clipping, AdamW. A loss or gradient that is
    /// not finite stops the run before the prompt is changed by it. With several ranks each runs its slice of
    /// every batch, its mean weighted by its share of the batch's targets, and the gradients are summed: the
    /// update is the one a single process makes on the whole batch.
    fn step(&mut self) -> Result<Update> {
        let t = &self.config.training;
        let step = self.state.step;
        self.optimizer.zero_grad();
        let mut loss_value = 0.0;
        for k in 0..t.grad_accumulation {
            let micro = step * t.grad_accumulation + k;
            let epoch = micro / self.batches_per_epoch;
            if self.epoch_cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
                self.epoch_cache = Some((epoch, epoch_batches(&self.lengths, t.batch_size, t.seed, epoch as u64)));
            }
            let batch = &self.epoch_cache.as_ref().expect("just set").1[micro % self.batches_per_epoch];
            let (size, rank) = (self.ranks.size, self.ranks.rank);
            let share = &batch[rank * batch.len() / size..(rank + 1) * batch.len() / size];
            let loss = self.setup.loss(&self.setup.train, share)?;
            let mut weights = [loss.as_ref().map_or(0.0, |(_, w)| *w)];
            let local = weights[0];
            self.ranks.sum_f64(&mut weights);
            if let Some((loss, _)) = loss {
                let loss = loss * (local / weights[0]) / t.grad_accumulation as f64;
                loss.backward();
                loss_value += loss.double_value(&[]);
            }
        }
        let mut summed = [loss_value];
        self.ranks.sum_f64(&mut summed);
        let loss_value = summed[0];
        self.optimizer.sum_gradients(&self.ranks)?;
        let grad_norm = self.optimizer.clip_grad_norm(t.max_grad_norm.unwrap_or(f64::INFINITY));
        ensure!(
            loss_value.is_finite() && grad_norm.is_finite(),
            "update {}: the loss is {loss_value} and the gradient norm {grad_norm}: training diverged (lower \
             optimizer.lr, or set training.max_grad_norm); nothing of this update was saved",
            step + 1
        );
        let lr = self.config.optimizer.lr * self.config.scheduler.factor(step, self.total);
        self.optimizer.step(lr);
        // One pass and one device sync over every parameter, so that no checkpoint saves weights an update broke.
        let finite: Vec<Tensor> =
            self.setup.prompt.var_store().variables().values().map(|v| v.isfinite().all()).collect();
        ensure!(
            Tensor::stack(&finite, 0).all().int64_value(&[]) != 0,
            "update {}: the prompt's weights are no longer finite after the update (learning rate {lr}): \
             training diverged; lower optimizer.lr",
            step + 1
        );
        self.state.step += 1;
        self.losses.push(loss_value);
        self.window.push(loss_value);
        Ok(Update { loss: loss_value, lr, grad_norm })
    }

    /// What follows an update: a metrics line every `log_every`, the eval loss every `eval_every`, a checkpoint
    /// every `save_every` (old ones pruned), and all three after the last update.
    fn after_step(&mut self, update: &Update) -> Result<()> {
        let t = &self.config.training;
        let (step, out) = (self.state.step, &self.config.output_dir);
        let done = step == self.total;
        if step % t.log_every == 0 || done {
            let mean = self.window.iter().sum::<f64>() / self.window.len() as f64;
            let epoch = (step * t.grad_accumulation) as f64 / self.batches_per_epoch as f64;
            let (lr, grad_norm) = (update.lr, update.grad_norm);
            if let Some(log) = &self.log {
                log.append(&json!({ "step": step, "epoch": epoch, "loss": mean, "lr": lr, "grad_norm": grad_norm }))?;
            }
            self.window.clear();
        }
        let mut improved = false;
        if t.eval_every.is_some_and(|n| step % n == 0) || done {
            if let Some(record) = validation_record(&self.setup, step, t.batch_size, &self.ranks)? {
                if let Some(log) = &self.log {
                    log.append(&record.line)?;
                }
                self.last_eval = Some(record.loss);
                let metric = self.config.eval_metric();
                let value = if metric == LOSS_METRIC { Some(record.loss) } else { record.metric(metric) };
                let value = value.with_context(|| format!("the validation figures have no {metric}"))?;
                // Lower loss is better; every task metric is higher-is-better.
                let better = |best: f64| if metric == LOSS_METRIC { value < best } else { value > best };
                if self.state.best_metric.is_none_or(better) {
                    (self.state.best_metric, self.state.best_step) = (Some(value), Some(step));
                    self.state.evals_since_best = 0;
                    improved = true;
                } else {
                    self.state.evals_since_best += 1;
                    if t.early_stopping_patience.is_some_and(|p| self.state.evals_since_best >= p) {
                        self.state.stopped_early = true;
                    }
                }
            }
        }
        // The best prompt is always a checkpoint, whatever save_every says.
        let save = t.save_every.is_some_and(|n| step % n == 0) || done || improved || self.state.stopped_early;
        if save && self.ranks.is_root() {
            checkpoint::save(out, &self.setup.prompt, &self.optimizer, &self.state)?;
            checkpoint::prune(out, t.save_total_limit, self.state.best_step)?;
        }
        Ok(())
    }

    /// After the last update of this invocation: the prompt, the final trainer state and the loss plot when the
    /// run is complete; a checkpoint to resume from when it stopped early on purpose.
    fn finish(&mut self) -> Result<()> {
        let out = &self.config.output_dir;
        if !self.ranks.is_root() {
            return Ok(());
        }
        if self.state.step < self.total && !self.state.stopped_early {
            if !checkpoint::list(out)?.contains(&self.state.step) {
                checkpoint::save(out, &self.setup.prompt, &self.optimizer, &self.state)?;
            }
            return Ok(());
        }
        if let (FinalPrompt::Best, Some(best)) = (self.config.training.final_prompt, self.state.best_step) {
            if best != self.state.step {
                checkpoint::load_prompt(&checkpoint::checkpoint_dir(out, best), &mut self.setup.prompt)
                    .context("the best checkpoint")?;
            }
        }
        self.setup.prompt.save_pretrained(out)?;
        let state = serde_json::to_string_pretty(&self.state)?;
        write_atomic(&out.join(TRAINER_STATE_FILE), |p| Ok(std::fs::write(p, state)?))?;
        run_log::plot(&out.join(METRICS_FILE), &out.join(PLOT_FILE))
    }
}

/// One evaluation on the validation split: its metrics.jsonl line and the figures in it.
struct ValidationRecord {
    line: serde_json::Value,
    loss: f64,
    metrics: Vec<crate::task::Metric>,
}

impl ValidationRecord {
    fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.iter().find(|m| m.name == name).map(|m| m.value)
    }
}

/// The eval loss and (for a task) its metrics at `step`, as `{"step", "eval_loss", "eval_<metric>"…}`; `None`
/// without validation data.
fn validation_record(setup: &Setup, step: usize, batch_size: usize, ranks: &Ranks) -> Result<Option<ValidationRecord>> {
    let Some(loss) = setup.eval_loss(batch_size, ranks)? else { return Ok(None) };
    let metrics = setup.metrics(batch_size)?.unwrap_or_default();
    let mut line = json!({ "step": step, "eval_loss": loss });
    for m in &metrics {
        line[format!("eval_{}", m.name)] = json!(m.value);
    }
    Ok(Some(ValidationRecord { line, loss, metrics }))
}

/// One update's figures.
struct Update {
    loss: f64,
    lr: f64,
    grad_norm: f64,
}
/// The resolved config a run wrote into `output_dir` (with `overrides` on top), for `--resume`.
pub fn resume_config(output_dir: &Path, overrides: &[String]) -> Result<TrainConfig> {
    let mut config = TrainConfig::load(&output_dir.join(CONFIG_FILE), overrides)?;
    config.output_dir = output_dir.to_path_buf();
    Ok(config)
}
