//! Task format files (`prompt_formats/<task>.yaml`): for one Russian SuperGLUE task a handcrafted zero-shot format,
//! a tunable one, the verbalizers of its labels and the field to shorten when an item is too long. The files of
//! the repository are built into the binary; a user's own file is read the same way.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One template or a list of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Templates {
    One(String),
    Many(Vec<String>),
}

impl Templates {
    pub fn all(&self) -> &[String] {
        match self {
            Self::One(t) => std::slice::from_ref(t),
            Self::Many(ts) => ts,
        }
    }
}

use super::RsgTask;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFormats {
    /// The built-in task the file is for (none for a task file's formats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<RsgTask>,
    /// A format with no trainable tokens, for zero-shot scoring; or several, each scored as a setting of its own
    /// (the report gives their mean and spread).
    pub zero_shot: Templates,
    /// A format with trainable tokens, a starting point for `ruprompts train`.
    pub tunable: String,
    /// Label key → candidate text (`true: " да"`); empty for PARus and RuCoS, whose candidates come from the data.
    #[serde(default)]
    pub verbalizers: BTreeMap<String, String>,
    /// The field cut from its end when an item does not fit in the model's context.
    #[serde(default)]
    pub truncation_field: Option<String>,
}

impl TaskFormats {
    /// The file of `prompt_formats/` for `task`, as built into the binary.
    pub fn bundled(task: RsgTask) -> Self {
        let text = match task {
            RsgTask::Danetqa => include_str!("../../prompt_formats/danetqa.yaml"),
            RsgTask::Terra => include_str!("../../prompt_formats/terra.yaml"),
            RsgTask::Rcb => include_str!("../../prompt_formats/rcb.yaml"),
            RsgTask::Parus => include_str!("../../prompt_formats/parus.yaml"),
            RsgTask::Muserc => include_str!("../../prompt_formats/muserc.yaml"),
            RsgTask::Rucos => include_str!("../../prompt_formats/rucos.yaml"),
            RsgTask::Russe => include_str!("../../prompt_formats/russe.yaml"),
            RsgTask::Rwsd => include_str!("../../prompt_formats/rwsd.yaml"),
            RsgTask::Lidirus => include_str!("../../prompt_formats/lidirus.yaml"),
        };
        serde_yaml::from_str(text).expect("the bundled format files are valid (tested)")
    }

    /// The first zero-shot template: the zero-shot setting of the headline.
    pub fn zero_shot(&self) -> &str {
        &self.zero_shot.all()[0]
    }

    /// A format file of the user's; errors name the file, line and key.
    pub fn load(path: &Path) -> Result<Self> {
        let formats: Self =
            crate::config::load(path, &[]).with_context(|| format!("task formats {}", path.display()))?;
        anyhow::ensure!(
            !formats.zero_shot.all().is_empty(),
            "task formats {}: `zero_shot`: give a template or a list of them",
            path.display()
        );
        Ok(formats)
    }
}
