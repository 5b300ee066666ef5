//! The `dataset` section of a training config: explicit files per split, or a Russian SuperGLUE task directory
//! as it is distributed (`train.jsonl`, `val.jsonl`, or the same gzipped), with the upstream files' quirks repaired.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::data::{read_rows, split_file, Record};
use crate::task::{EvalTask, RsgTask, TaskFile};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// Training rows (.jsonl, .csv, .tsv).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<PathBuf>,
    /// Rows for the eval loss during training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<PathBuf>,
    /// A Russian SuperGLUE task: its files are read from `dir` (train.jsonl, val.jsonl, or .jsonl.gz) unless `train` and
    /// `validation` name them; `ruprompts eval --config` scores this task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<RsgTask>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// A multiple-choice task of your own (a task file, see `eval --task-file`): its `train` split, and for the eval
    /// loss its `dev` split (else `val`), are read unless `train` and `validation` name files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_file: Option<PathBuf>,
    /// The task file, as the config's loading read it.
    #[serde(skip)]
    pub loaded_task_file: Option<Arc<TaskFile>>,
}

/// The rows of the splits a training run uses.
#[derive(Debug)]
pub struct Splits {
    pub train: Vec<Record>,
    pub validation: Vec<Record>,
    /// The file `validation` was read from, if any (an empty one is worth a warning).
    pub validation_file: Option<PathBuf>,
}

impl DatasetConfig {
    /// The task the items come from: a built-in one (`task`) or a task file's (once loaded).
    pub fn eval_task(&self) -> Option<EvalTask> {
        match (self.task, &self.loaded_task_file) {
            (Some(task), _) => Some(EvalTask::Rsg(task)),
            (None, Some(file)) => Some(EvalTask::File(file.clone())),
            (None, None) => None,
        }
    }

    pub fn load(&self) -> Result<Splits> {
        if let (Some(file), None) = (&self.loaded_task_file, &self.task) {
            let named =
                |given: &Option<PathBuf>, split: &str| given.clone().or_else(|| file.split(split).map(PathBuf::from));
            let Some(train) = named(&self.train, "train") else {
                bail!("dataset.task_file: the task file names no train split (data: {{train: ...}}) and dataset.train is not set")
            };
            let rows = read_rows(&train)?;
            if rows.is_empty() {
                bail!("{}: the training data has no rows", train.display());
            }
            // Training watches the task's `dev` split when it has one, leaving `val` (what eval reports) unseen.
            let watched = named(&self.validation, "dev").or_else(|| named(&None, "val"));
            let validation = watched.as_ref().map(|p| read_rows(p)).transpose()?.unwrap_or_default();
            return Ok(Splits { train: rows, validation, validation_file: watched });
        }
        let (train, validation) = match (&self.task, &self.dir) {
            (Some(_), None) => match &self.train {
                Some(train) => (train.clone(), self.validation.clone()),
                None => bail!(
                    "dataset.task needs dataset.dir (the folder holding train.jsonl and val.jsonl) or dataset.train"
                ),
            },
            (None, Some(_)) => bail!("dataset.dir is only read with dataset.task"),
            (Some(_), Some(dir)) => (
                self.train.clone().unwrap_or_else(|| split_file(dir, "train")),
                self.validation.clone().or_else(|| Some(split_file(dir, "val")).filter(|p| p.is_file())),
            ),
            (None, None) => match &self.train {
                Some(train) => (train.clone(), self.validation.clone()),
                None => bail!("dataset needs `train` (a data file) or `task` and `dir` (a Russian SuperGLUE folder)"),
            },
        };
        let read = |path: &PathBuf| -> Result<Vec<Record>> {
            let mut rows = read_rows(path)?;
            if let Some(task) = self.task {
                for record in &mut rows {
                    for (found, meant) in task.renamed_keys() {
                        if !record.row.contains_key(*meant) {
                            if let Some(v) = record.row.remove(*found) {
                                record.row.insert(meant.to_string(), v);
                            }
                        }
                    }
                }
            }
            Ok(rows)
        };
        let rows = read(&train)?;
        if rows.is_empty() {
            bail!("{}: the training data has no rows", train.display());
        }
        let read_validation = validation.as_ref().map(read).transpose()?.unwrap_or_default();
        Ok(Splits { train: rows, validation: read_validation, validation_file: validation })
    }
}
