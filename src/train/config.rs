//! The training config: the sections of one YAML run file, typed. Each part of the toolkit defines its own
//! section (`data`, `provider`, `model`, the optimizer and schedule here) and [`TrainConfig`] gathers them;
//! `crate::config` reads the YAML.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

use super::{AdamWConfig, ScheduleConfig};
use super::{DatasetConfig, Objective};
use crate::config::Validate;
use crate::data::PreprocessConfig;
use crate::model::{ModelSource, Quantize};
use crate::provider::ProviderConfig;
use crate::task::fewshot::FewShotConfig;
use crate::task::{TaskFile, TaskFormats};

/// Everything a training run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub model: ModelSource,
    /// Tokenizer directory; default: the model's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<PathBuf>,
    pub dataset: DatasetConfig,
    pub prompt_format: FormatConfig,
    #[serde(default)]
    pub prompt_provider: ProviderSection,
    pub preprocessing: PreprocessConfig,
    /// What is minimised: `lm` (default) or `choice`.
    #[serde(default)]
    pub objective: Objective,
    pub optimizer: AdamWConfig,
    #[serde(default)]
    pub scheduler: ScheduleConfig,
    #[serde(default)]
    pub training: TrainingConfig,
    /// Demonstrations for `eval`'s k-shot settings (`eval --num-fewshot` overrides `k`).
    #[serde(default)]
    pub fewshot: FewShotConfig,
    /// Where checkpoints, metrics, the plot and the final prompt go.
    pub output_dir: PathBuf,
}

/// `prompt_provider`: which provider (`kind` and its options) and, optionally, the prompt it starts from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ProviderSection {
    /// A prompt whose parameters the new one starts from (a folder of ours or ruPrompts', a PEFT adapter folder,
    /// or a Hub id `owner/name[@rev]`): to continue a published prompt on new data, or move one between tasks.
    /// Its provider must have the same parameters with the same shapes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
    #[serde(flatten)]
    pub provider: ProviderConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatConfig {
    /// ruPrompts template, e.g. `<P*20>{premise} Вопрос: {hypothesis}? Ответ:`.
    pub template: String,
    /// Put the formatted text in the model's chat template as the user's turn, the answer after the assistant's
    /// opening (for chat models; a task's items only). `eval --config` scores it the same way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub chat: bool,
}

/// The loop's knobs. Steps count optimizer updates (after gradient accumulation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Batches whose gradients are summed before each update.
    #[serde(default = "one")]
    pub grad_accumulation: usize,
    /// Updates to make; default: `epochs` over the training data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<usize>,
    /// Passes over the training data when `max_steps` is not set.
    #[serde(default = "one")]
    pub epochs: usize,
    /// Eval loss (and with `dataset.task` the task's metrics) on the validation split every N updates (and at the
    /// end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_every: Option<usize>,
    /// The validation figure that picks the best checkpoint: `loss` (lower is better) or one of the task's
    /// metrics (`accuracy`, `macro_f1`, `mcc`, `f1a`, `em`, `f1`; higher is better). Default: the task's main
    /// metric, `loss` without `dataset.task`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_metric: Option<String>,
    /// The prompt the run ends with: the `best` checkpoint by `eval_metric` (default) or the `last` update's.
    #[serde(default, rename = "final")]
    pub final_prompt: FinalPrompt,
    /// Stop after this many evaluations in a row without a better `eval_metric`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping_patience: Option<usize>,
    /// A checkpoint every N updates (and at the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_every: Option<usize>,
    /// A line in metrics.jsonl every N updates.
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    /// At most this many checkpoints are kept, the oldest deleted first; the newest and the best by eval loss
    /// are always kept (Hugging Face's rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_total_limit: Option<usize>,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Gradient-norm clipping (Hugging Face's default 1.0); `null` turns it off.
    #[serde(default = "default_max_grad_norm")]
    pub max_grad_norm: Option<f64>,
}

/// Which prompt a finished run keeps in its output folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinalPrompt {
    #[default]
    Best,
    Last,
}

/// The loss, the one validation figure every run has.
pub const LOSS_METRIC: &str = "loss";

fn default_batch_size() -> usize {
    8
}
fn one() -> usize {
    1
}
fn default_log_every() -> usize {
    10
}
fn default_seed() -> u64 {
    42
}
fn default_max_grad_norm() -> Option<f64> {
    Some(1.0)
}

impl Default for TrainingConfig {
    fn default() -> Self {
        serde_yaml::from_str("{}").expect("every field has a default")
    }
}

impl TrainConfig {
    /// Loads `path` (with its `extends`), applies `overrides` (`training.batch_size=4`) and checks every value's
    /// range, naming the key and the file:line or override that set a bad one.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let mut config: Self = crate::config::load_valid(path, overrides)?;
        if let Some(file) = &config.dataset.task_file {
            let task = TaskFile::load(file).with_context(|| format!("{}: dataset.task_file", path.display()))?;
            config.dataset.loaded_task_file = Some(Arc::new(task));
            // What depends on the task's metrics is checked once it is known.
            config.validate().with_context(|| path.display().to_string())?;
        }
        Ok(config)
    }

    /// The figure that picks the best checkpoint (see [`TrainingConfig::eval_metric`]).
    pub fn eval_metric(&self) -> &str {
        match (&self.training.eval_metric, self.dataset.eval_task()) {
            (Some(metric), _) => metric,
            (None, Some(task)) => task.metric_names()[0],
            (None, None) => LOSS_METRIC,
        }
    }

    /// `formats` (a task's zero-shot format and defaults) with this config's verbalizers and truncation field,
    /// where it sets them: how `ruprompts eval` scores the prompt this config trains.
    pub fn scoring_formats(&self, mut formats: TaskFormats) -> TaskFormats {
        if let Some(v) = self.preprocessing.verbalizers().filter(|v| !v.is_empty()) {
            formats.verbalizers = v.clone();
        }
        if let Some(field) = self.preprocessing.truncation_field() {
            formats.truncation_field = Some(field.to_string());
        }
        formats
    }

    /// The range checks of [`Self::load`], for a config built in code.
    pub fn validate(&self) -> Result<()> {
        self.check().map_err(|(key, reason)| anyhow!("`{key}`: {reason}"))
    }
}

/// A range check's verdict: the first key at fault (dotted as in the YAML) and why.
type Checked = std::result::Result<(), (String, String)>;

fn bad(key: &str, reason: String) -> Checked {
    Err((key.to_string(), reason))
}

impl Validate for TrainConfig {
    fn check(&self) -> Checked {
        self.check_model()?;
        self.check_counts()?;
        self.check_optimizer()?;
        self.check_task()?;
        self.check_texts()
    }
}

impl TrainConfig {
    /// The backbone as trained: its own weights, not quantized ones; the chat template only around a task's items.
    fn check_model(&self) -> Checked {
        if self.model.quantize != Quantize::None {
            return bad(
                "model.quantize",
                format!(
                    "{} weights are for scoring, generation and serving; training needs the model's own weights \
                     (gradients do not flow through quantized layers): drop it",
                    self.model.quantize
                ),
            );
        }
        if self.prompt_format.chat && self.dataset.task.is_none() && self.dataset.task_file.is_none() {
            return bad(
                "prompt_format.chat",
                "puts a task's items in the chat template: set dataset.task or dataset.task_file".into(),
            );
        }
        Ok(())
    }

    /// Counts of at least 1, and a gradient norm cap that is a positive number.
    fn check_counts(&self) -> Checked {
        let t = &self.training;
        let counts = [
            ("training.batch_size", Some(t.batch_size)),
            ("training.grad_accumulation", Some(t.grad_accumulation)),
            ("training.epochs", Some(t.epochs)),
            ("training.max_steps", t.max_steps),
            ("training.eval_every", t.eval_every),
            ("training.save_every", t.save_every),
            ("training.log_every", Some(t.log_every)),
            ("training.save_total_limit", t.save_total_limit),
            ("training.early_stopping_patience", t.early_stopping_patience),
            ("preprocessing.max_tokens", Some(self.preprocessing.max_tokens())),
        ];
        for (key, value) in counts {
            if value == Some(0) {
                return bad(key, "must be at least 1 (0 given)".into());
            }
        }
        if let Some(norm) = t.max_grad_norm {
            if !(norm.is_finite() && norm > 0.0) {
                return bad("training.max_grad_norm", format!("must be a positive number or null, not {norm}"));
            }
        }
        Ok(())
    }

    /// AdamW's settings in their ranges, and a warmup that ends within the run.
    fn check_optimizer(&self) -> Checked {
        let o = &self.optimizer;
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return bad("optimizer.lr", format!("must be a positive number, not {}", o.lr));
        }
        for (i, beta) in [o.betas.0, o.betas.1].into_iter().enumerate() {
            if !(0.0..1.0).contains(&beta) {
                return bad("optimizer.betas", format!("beta{} must be in [0, 1), not {beta}", i + 1));
            }
        }
        if !(o.eps.is_finite() && o.eps > 0.0) {
            return bad("optimizer.eps", format!("must be a positive number, not {}", o.eps));
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            return bad("optimizer.weight_decay", format!("must be a number ≥ 0, not {}", o.weight_decay));
        }
        if let Some(steps) = self.training.max_steps {
            let warmup = self.scheduler.warmup_steps;
            if warmup > steps {
                return bad(
                    "scheduler.warmup_steps",
                    format!("{warmup} is more than training.max_steps {steps}: the learning rate would never reach optimizer.lr"),
                );
            }
        }
        Ok(())
    }

    /// What the task decides: one task or task file, a metric it has, an objective and preprocessing that fit it.
    fn check_task(&self) -> Checked {
        let task = self.dataset.eval_task();
        let has_task = task.is_some() || self.dataset.task_file.is_some();
        if self.dataset.task.is_some() && self.dataset.task_file.is_some() {
            return bad(
                "dataset.task_file",
                "give dataset.task (a built-in task) or dataset.task_file, not both".into(),
            );
        }
        // A task file's metrics are known once it is read (TrainConfig::load checks again then).
        if let Some(metric) =
            self.training.eval_metric.as_ref().filter(|_| task.is_some() || self.dataset.task_file.is_none())
        {
            let known: Vec<&str> = task.as_ref().map_or(vec![], |task| task.metric_names());
            if metric != LOSS_METRIC && !known.contains(&metric.as_str()) {
                let task = task.as_ref().map_or("no dataset.task".to_string(), |t| t.name().to_string());
                return bad(
                    "training.eval_metric",
                    format!(
                        "{metric:?} is not a metric of {task}: use {}",
                        [&[LOSS_METRIC][..], &known].concat().join(", ")
                    ),
                );
            }
        }
        if let Objective::Choice { score } = &self.objective {
            if !has_task {
                return bad("objective.kind", "choice needs dataset.task (the candidates come from the task)".into());
            }
            if score.divisor("").is_none() {
                return bad("objective.score", format!("{score:?} cannot be trained: use sum, per_char or per_byte"));
            }
        }
        match (&self.preprocessing, has_task) {
            (PreprocessConfig::Text2text { .. }, true) => {
                return bad(
                    "preprocessing.kind",
                    "dataset.task trains multiple-choice items: use classification".into(),
                )
            }
            (PreprocessConfig::Classification { verbalizers, .. }, false) if verbalizers.is_empty() => {
                return bad("preprocessing.verbalizers", "needed without dataset.task (label → candidate text)".into())
            }
            _ => {}
        }
        Ok(())
    }

    /// Texts that may not be empty.
    fn check_texts(&self) -> Checked {
        if self.fewshot.split.trim().is_empty() {
            return bad("fewshot.split", "is empty: name a split (train) or a file".into());
        }
        if self.prompt_format.template.trim().is_empty() {
            return bad("prompt_format.template", "is empty".into());
        }
        Ok(())
    }
}
