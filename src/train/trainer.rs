//! The training loop: a frozen model, one trainable prompt, AdamW on the prompt's parameters only, logging,
//! evaluation, checkpoints, and resuming a run exactly where its last checkpoint left it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tch::Tensor;

use super::checkpoint::{self, TrainerState, TRAINER_STATE_FILE};
use super::metrics::{self, METRICS_FILE, PLOT_FILE};
use super::AdamW;
use crate::config::TrainConfig;
use crate::data::{collate, epoch_batches, Batch, Example, Preprocessor, IGNORE};
use crate::format::PromptFormat;
use crate::fs::write_atomic;
use crate::model::{Gpt2, Input};
use crate::prompt::{Prompt, STATE_FILE};
use crate::tokenizer::Tokenizer;

/// The resolved config of a run, written into its output folder (and read back by `--resume`).
pub const CONFIG_FILE: &str = "config.yaml";

/// How this invocation runs (not part of the config: the same run may be resumed with other options).
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Continue from the last complete checkpoint in the output folder.
    pub resume: bool,
    /// Stop after this many updates in this invocation (a later `--resume` continues).
    pub max_updates_now: Option<usize>,
    /// Show a progress bar on stderr.
    pub progress: bool,
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
    /// Updates per second in this invocation, and wall time.
    pub steps_per_sec: f64,
    pub seconds: f64,
    pub trainable_parameters: i64,
}

/// Everything the loop needs, built from the config.
struct Setup {
    model: Gpt2,
    prompt: Prompt,
    token_id: i64,
    pad_id: i64,
    train: Vec<Example>,
    validation: Vec<Example>,
}

fn setup(config: &TrainConfig) -> Result<Setup> {
    let (_, model, model_tokenizer) = config.model.load().context("model.path")?;
    let mut tokenizer = match &config.tokenizer {
        Some(dir) => Tokenizer::from_dir(dir)?,
        None => model_tokenizer,
    };
    let format = PromptFormat::compile(&config.prompt_format.template, &tokenizer).context("prompt_format.template")?;
    let mut prompt =
        crate::rng::seeded(config.training.seed, || Prompt::new(format, config.prompt_provider.clone(), &model))
            .context("prompt_provider")?;
    // As given in the config (`demo`, a directory, a Hub id): `ruprompts generate` finds the model by it.
    prompt.pretrained_model_name = Some(config.model.path.to_string_lossy().into_owned());
    let token_id = prompt.add_token(&mut tokenizer)?;
    let (max_tokens, positions) = (config.preprocessing.max_tokens(), model.config().n_positions);
    ensure!(
        max_tokens as i64 <= positions,
        "preprocessing.max_tokens {max_tokens} is more than the model's {positions} positions (n_positions)"
    );
    let splits = config.dataset.load().context("dataset")?;
    let pre = Preprocessor::new(prompt.format(), &tokenizer, &config.preprocessing).context("preprocessing")?;
    let encode = |rows: &[crate::data::Record], split: &str| -> Result<Vec<Example>> {
        let (examples, skipped) = pre.encode_all(rows)?;
        if let Some(first) = skipped.first() {
            eprintln!(
                "{split}: left out {} of {} rows longer than max_tokens {max_tokens} (first: {first})",
                skipped.len(),
                rows.len()
            );
        }
        Ok(examples)
    };
    let (train, validation) = (encode(&splits.train, "train")?, encode(&splits.validation, "validation")?);
    ensure!(!train.is_empty(), "no training rows fit in max_tokens {max_tokens}");
    let special = tokenizer.special();
    let pad_id = i64::from(special.pad.or(special.eos).unwrap_or(0));
    Ok(Setup { model, prompt, token_id, pad_id, train, validation })
}

/// Mean loss of `batch` under the prompt (graph kept for backward).
fn batch_loss(s: &Setup, batch: &Batch) -> Result<Tensor> {
    let device = s.model.device();
    let embeds = s.prompt.embed(&s.model, &batch.input_ids.to_device(device), s.token_id)?;
    s.model.loss(Input::Embeds(&embeds), Some(&batch.attention_mask.to_device(device)), &batch.labels)
}

/// Token-weighted mean loss over the validation examples.
fn eval_loss(s: &Setup, batch_size: usize) -> Result<Option<f64>> {
    if s.validation.is_empty() {
        return Ok(None);
    }
    let (mut sum, mut tokens) = (0.0, 0);
    tch::no_grad(|| -> Result<()> {
        for chunk in s.validation.chunks(batch_size.max(1)) {
            let refs: Vec<&Example> = chunk.iter().collect();
            let batch = collate(&refs, s.pad_id);
            // Labelled targets after the shift that the loss applies.
            let n = refs.iter().map(|e| e.labels[1..].iter().filter(|&&l| l != IGNORE).count()).sum::<usize>();
            sum += batch_loss(s, &batch)?.double_value(&[]) * n as f64;
            tokens += n;
        }
        Ok(())
    })?;
    Ok(Some(sum / tokens.max(1) as f64))
}

/// Runs (or resumes) the training that `config` describes.
pub fn train(config: &TrainConfig, options: &TrainOptions) -> Result<TrainReport> {
    let out = &config.output_dir;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create output_dir {}", out.display()))?;
    let existing = checkpoint::list(out)?;
    let resume_from = match (options.resume, existing.last()) {
        (true, Some(&step)) => Some(step),
        (true, None) => bail!("nothing to resume: {} has no complete checkpoint", out.display()),
        (false, Some(step)) => bail!(
            "output_dir {} already holds a run (checkpoint-{step}); resume it with --resume or choose another output_dir",
            out.display()
        ),
        (false, None) => None,
    };
    write_atomic(&out.join(CONFIG_FILE), |p| Ok(std::fs::write(p, serde_yaml::to_string(config)?)?))?;

    let mut s = setup(config)?;
    let t = &config.training;
    ensure!(t.batch_size > 0 && t.grad_accumulation > 0, "training.batch_size and grad_accumulation must be positive");
    let lengths: Vec<usize> = s.train.iter().map(|e| e.input_ids.len()).collect();
    let batches_per_epoch = s.train.len().div_ceil(t.batch_size);
    let total = t.max_steps.unwrap_or(t.epochs * batches_per_epoch.div_ceil(t.grad_accumulation));
    ensure!(total > 0, "nothing to train: training.max_steps (or epochs) is 0");

    let params: Vec<(String, Tensor)> = s.prompt.var_store().variables().into_iter().collect();
    let mut optimizer = AdamW::new(config.optimizer.clone(), params);
    let mut state = TrainerState { step: 0, total_steps: total, best_eval_loss: None, best_step: None };
    if let Some(step) = resume_from {
        let dir = checkpoint::checkpoint_dir(out, step);
        let named = Tensor::read_safetensors(dir.join(STATE_FILE))
            .with_context(|| format!("cannot read {}", dir.join(STATE_FILE).display()))?;
        s.prompt.set_state(&named).with_context(|| format!("checkpoint {}", dir.display()))?;
        state = checkpoint::load_into(&dir, &mut optimizer)?;
        ensure!(
            state.total_steps == total,
            "checkpoint {} was made for {} steps, the config now gives {total}",
            dir.display(),
            state.total_steps
        );
    }
    let log = metrics::open_log(out, resume_from)?;
    if resume_from.is_none() {
        if let Some(loss) = eval_loss(&s, t.batch_size)? {
            log.append(&json!({ "step": 0, "eval_loss": loss }))?;
        }
    }

    let progress = if options.progress { ProgressBar::new(total as u64) } else { ProgressBar::hidden() };
    progress.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} updates {msg} [{elapsed_precise} < {eta_precise}]")
            .expect("valid template"),
    );
    progress.set_position(state.step as u64);
    let start = Instant::now();
    let first = state.step;
    let end = options.max_updates_now.map_or(total, |n| (first + n).min(total));
    let mut epoch_cache: Option<(usize, Vec<Vec<usize>>)> = None;
    let (mut losses, mut window) = (Vec::new(), Vec::new());
    let mut last_eval = None;
    while state.step < end {
        let step = state.step;
        optimizer.zero_grad();
        let mut loss_value = 0.0;
        for k in 0..t.grad_accumulation {
            let micro = step * t.grad_accumulation + k;
            let epoch = micro / batches_per_epoch;
            if epoch_cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
                epoch_cache = Some((epoch, epoch_batches(&lengths, t.batch_size, t.seed, epoch as u64)));
            }
            let indices = &epoch_cache.as_ref().expect("just set").1[micro % batches_per_epoch];
            let examples: Vec<&Example> = indices.iter().map(|&i| &s.train[i]).collect();
            let loss = batch_loss(&s, &collate(&examples, s.pad_id))?;
            let loss = loss / t.grad_accumulation as f64;
            loss.backward();
            loss_value += loss.double_value(&[]);
        }
        let grad_norm = optimizer.clip_grad_norm(t.max_grad_norm.unwrap_or(f64::INFINITY));
        let lr = config.optimizer.lr * config.scheduler.factor(step, total);
        optimizer.step(lr);
        state.step += 1;
        losses.push(loss_value);
        window.push(loss_value);
        let done = state.step == total;
        if state.step % t.log_every.max(1) == 0 || done {
            let mean = window.iter().sum::<f64>() / window.len() as f64;
            let epoch = (state.step * t.grad_accumulation) as f64 / batches_per_epoch as f64;
            log.append(&json!({ "step": state.step, "epoch": epoch, "loss": mean, "lr": lr, "grad_norm": grad_norm }))?;
            window.clear();
        }
        if t.eval_every.is_some_and(|n| state.step % n == 0) || done {
            if let Some(loss) = eval_loss(&s, t.batch_size)? {
                log.append(&json!({ "step": state.step, "eval_loss": loss }))?;
                if state.best_eval_loss.is_none_or(|best| loss < best) {
                    (state.best_eval_loss, state.best_step) = (Some(loss), Some(state.step));
                }
                last_eval = Some(loss);
            }
        }
        if t.save_every.is_some_and(|n| state.step % n == 0) || done {
            checkpoint::save(out, &s.prompt, &optimizer, &state)?;
            checkpoint::prune(out, t.save_total_limit, state.best_step)?;
        }
        progress.set_message(format!("loss {loss_value:.4} lr {lr:.2e}"));
        progress.inc(1);
    }
    progress.finish_and_clear();
    if state.step < total && !checkpoint::list(out)?.contains(&state.step) {
        // Stopped early on purpose: leave a checkpoint to resume from.
        checkpoint::save(out, &s.prompt, &optimizer, &state)?;
    }
    let seconds = start.elapsed().as_secs_f64();
    if state.step == total {
        s.prompt.save_pretrained(out)?;
        write_atomic(&out.join(TRAINER_STATE_FILE), |p| Ok(std::fs::write(p, serde_json::to_string_pretty(&state)?)?))?;
        metrics::plot(&out.join(METRICS_FILE), &out.join(PLOT_FILE))?;
    }
    Ok(TrainReport {
        output_dir: out.clone(),
        steps: state.step,
        total_steps: total,
        steps_per_sec: (state.step - first) as f64 / seconds.max(1e-9),
        seconds,
        losses,
        eval_loss: last_eval,
        trainable_parameters: s.prompt.num_parameters(),
    })
}

/// The resolved config a run wrote into `output_dir` (with `overrides` on top), for `--resume`.
pub fn resume_config(output_dir: &Path, overrides: &[String]) -> Result<TrainConfig> {
    let mut config = TrainConfig::load(&output_dir.join(CONFIG_FILE), overrides)?;
    config.output_dir = output_dir.to_path_buf();
    Ok(config)
}
