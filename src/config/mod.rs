//! The training config: one YAML file (optionally `extends:` others) plus `key.sub=value` overrides, typed here.
//! Sections that belong to one part of the toolkit are defined there (`data`, `provider`, `train`) and gathered
//! in [`TrainConfig`].

mod load;
mod locate;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub use load::{load as load_yaml, Source};

use crate::data::{DatasetConfig, PreprocessConfig};
use crate::device::{DType, DeviceChoice};
use crate::model::Gpt2;
use crate::provider::ProviderConfig;
use crate::tokenizer::Tokenizer;
use crate::train::{AdamWConfig, ScheduleConfig};

/// Everything a training run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub model: ModelConfig,
    /// Tokenizer directory; default: the model's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<PathBuf>,
    pub dataset: DatasetConfig,
    pub prompt_format: FormatConfig,
    #[serde(default)]
    pub prompt_provider: ProviderConfig,
    pub preprocessing: PreprocessConfig,
    pub optimizer: AdamWConfig,
    #[serde(default)]
    pub scheduler: ScheduleConfig,
    #[serde(default)]
    pub training: TrainingConfig,
    /// Where checkpoints, metrics, the plot and the final prompt go.
    pub output_dir: PathBuf,
}

/// The frozen backbone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A Hugging Face model directory (config.json, weights, tokenizer), or `demo` for the bundled tiny Russian
    /// model (built on first use, as `ruprompts demo` does).
    pub path: PathBuf,
    /// Revision of a Hub model id (branch, tag or commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default)]
    pub dtype: DType,
    #[serde(default)]
    pub device: DeviceChoice,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatConfig {
    /// ruPrompts template, e.g. `<P*20>{premise} Вопрос: {hypothesis}? Ответ:`.
    pub template: String,
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
    /// Eval loss on the validation split every N updates (and at the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_every: Option<usize>,
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

impl ModelConfig {
    /// The model directory: `demo` built first when missing, a Hub id (`owner/name`, with `revision`) pulled into
    /// the Hugging Face cache, or a local folder.
    pub fn dir(&self) -> Result<PathBuf> {
        if self.path.as_os_str() == "demo" {
            return crate::demo::ensure_model(self.device.resolve()?);
        }
        let path = match &self.revision {
            Some(rev) => PathBuf::from(format!("{}@{rev}", self.path.display())),
            None => self.path.clone(),
        };
        let dir = crate::hub::resolve_model(&path).with_context(|| format!("model.path {}", path.display()))?;
        anyhow::ensure!(
            dir.is_dir(),
            "model '{}' (model.path, --model) is not a directory nor a Hub id such as owner/name",
            self.path.display()
        );
        Ok(dir)
    }

    /// The model directory ([`Self::dir`]) with the frozen model loaded from it (dtype, device as configured) and
    /// its tokenizer.
    pub fn load(&self) -> Result<(PathBuf, Gpt2, Tokenizer)> {
        let dir = self.dir()?;
        let model = Gpt2::from_dir(&dir, self.dtype.kind(), self.device.resolve()?)
            .with_context(|| format!("cannot load the model in {}", dir.display()))?;
        let tokenizer = Tokenizer::from_dir(&dir)?;
        Ok((dir, model, tokenizer))
    }
}

impl TrainConfig {
    /// Loads `path` (with its `extends`) and applies `overrides` (`training.batch_size=4`).
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        load::load(path, overrides)
    }
}
