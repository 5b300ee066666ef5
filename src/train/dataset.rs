//! The `dataset` section of a training config: explicit files per split, or a Russian SuperGLUE task directory
//! as it is distributed (`train.jsonl`, `val.jsonl`, or the same gzipped), with the upstream files' quirks repaired.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::data::{read_rows, split_file, Record};
use crate::eval::RsgTask;

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
}

/// The rows of the splits a training run uses.
#[derive(Debug)]
pub struct Splits {
    pub train: Vec<Record>,
    pub validation: Vec<Record>,
}

impl DatasetConfig {
    pub fn load(&self) -> Result<Splits> {
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
        let train = read(&train)?;
        if train.is_empty() {
            bail!("the training data has no rows");
        }
        let validation = validation.as_ref().map(read).transpose()?.unwrap_or_default();
        Ok(Splits { train, validation })
    }
}
