//! Checkpoints: `checkpoint-<step>/` holds the prompt in `save_pretrained`'s layout, the optimizer moments and
//! `trainer_state.json`. Each is built in a hidden temp folder and renamed into place, so a run killed while
//! saving leaves every earlier checkpoint whole, and a folder named `checkpoint-<step>` is always complete.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::AdamW;
use crate::fs::remove_dir;
use crate::prompt::{Prompt, STATE_FILE};

pub const TRAINER_STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const PREFIX: &str = "checkpoint-";

/// Where a run stands; written into every checkpoint and, at the end, into the output folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer updates done.
    pub step: usize,
    pub total_steps: usize,
    /// The validation figure that picks the best checkpoint (`training.eval_metric`).
    #[serde(default = "loss")]
    pub eval_metric: String,
    /// Best value of `eval_metric` so far and the step it was measured at.
    #[serde(alias = "best_eval_loss")]
    pub best_metric: Option<f64>,
    pub best_step: Option<usize>,
    /// Evaluations since the best one (early stopping counts them).
    #[serde(default)]
    pub evals_since_best: usize,
    /// No better `eval_metric` in `early_stopping_patience` evaluations: the run is over.
    #[serde(default)]
    pub stopped_early: bool,
}

fn loss() -> String {
    super::LOSS_METRIC.to_string()
}

pub fn checkpoint_dir(output_dir: &Path, step: usize) -> PathBuf {
    output_dir.join(format!("{PREFIX}{step}"))
}

/// Writes `checkpoint-<step>` atomically (replacing one of the same step).
pub fn save(output_dir: &Path, prompt: &Prompt, optimizer: &AdamW, state: &TrainerState) -> Result<PathBuf> {
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{PREFIX}{}.", state.step))
        .tempdir_in(output_dir)
        .with_context(|| format!("cannot create a temp folder in {}", output_dir.display()))?;
    prompt.save_pretrained(tmp.path())?;
    let moments: Vec<(String, Tensor)> =
        optimizer.state().into_iter().map(|(n, t)| (n, t.to_device(Device::Cpu).contiguous())).collect();
    Tensor::write_safetensors(&moments, tmp.path().join(OPTIMIZER_FILE))?;
    std::fs::write(tmp.path().join(TRAINER_STATE_FILE), serde_json::to_string_pretty(state)?)?;
    let dir = checkpoint_dir(output_dir, state.step);
    if dir.exists() {
        remove_dir(&dir)?;
    }
    std::fs::rename(tmp.keep(), &dir).with_context(|| format!("cannot move the checkpoint into {}", dir.display()))?;
    Ok(dir)
}

/// Steps of the complete checkpoints in `output_dir`, ascending.
pub fn list(output_dir: &Path) -> Result<Vec<usize>> {
    let mut steps = Vec::new();
    let entries = std::fs::read_dir(output_dir).with_context(|| format!("cannot read {}", output_dir.display()))?;
    for entry in entries {
        let name = entry?.file_name();
        if let Some(step) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)).and_then(|s| s.parse().ok()) {
            if checkpoint_dir(output_dir, step).join(TRAINER_STATE_FILE).is_file() {
                steps.push(step);
            }
        }
    }
    steps.sort_unstable();
    Ok(steps)
}

/// Puts the prompt weights saved in checkpoint folder `dir` into `prompt`.
pub fn load_prompt(dir: &Path, prompt: &mut Prompt) -> Result<()> {
    let file = dir.join(STATE_FILE);
    let named = Tensor::read_safetensors(&file).with_context(|| format!("cannot read {}", file.display()))?;
    prompt.set_state(&named).with_context(|| format!("checkpoint {}", dir.display()))
}

/// Reads a checkpoint's trainer state and restores the optimizer moments from it.
pub fn load_into(dir: &Path, optimizer: &mut AdamW) -> Result<TrainerState> {
    let path = dir.join(TRAINER_STATE_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let state: TrainerState =
        serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))?;
    let moments = Tensor::read_safetensors(dir.join(OPTIMIZER_FILE))
        .with_context(|| format!("cannot read {}", dir.join(OPTIMIZER_FILE).display()))?;
    optimizer.load_state(&moments, state.step as i64).with_context(|| format!("checkpoint {}", dir.display()))?;
    Ok(state)
}

/// Deletes the oldest checkpoints until at most `keep` remain, but never the newest nor the one at `best_step`
/// (Hugging Face's `save_total_limit`); also removes temp folders left by a run killed while saving or deleting.
/// A checkpoint is renamed before it is deleted, so a kill mid-delete never leaves a partial `checkpoint-<step>`.
pub fn prune(output_dir: &Path, keep: Option<usize>, best_step: Option<usize>) -> Result<()> {
    for entry in std::fs::read_dir(output_dir)? {
        let entry = entry?;
        if entry.file_name().to_str().is_some_and(|n| n.starts_with(&format!(".{PREFIX}"))) {
            std::fs::remove_dir_all(entry.path()).ok();
        }
    }
    let Some(keep) = keep else { return Ok(()) };
    let steps = list(output_dir)?;
    let newest = steps.last().copied();
    let mut excess = steps.len().saturating_sub(keep);
    for step in steps {
        if excess == 0 {
            break;
        }
        if Some(step) == best_step || Some(step) == newest {
            continue;
        }
        remove_dir(&checkpoint_dir(output_dir, step))?;
        excess -= 1;
    }
    Ok(())
}
