//! Where a backbone comes from (the config's `model:` section) and a backbone loaded from a local folder. Finding
//! that folder for `demo` or a Hub id is the caller's job (the resolve module, at the CLI edge); nothing here
//! builds or downloads.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::{Model, Quantize};
use crate::device::{DType, DeviceChoice, DeviceMap};
use crate::gguf::{self, Gguf};
use crate::tokenizer::Tokenizer;

/// The frozen backbone as a config names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSource {
    /// A Hugging Face model directory (config.json, weights, tokenizer), a `.gguf` file (or a folder holding one),
    /// a Hub id (`owner/name`, or `owner/name/FILE.gguf` for one GGUF file of a repo), or `demo` for the bundled
    /// tiny Russian model (built on first use, as `ruprompts demo` does).
    pub path: PathBuf,
    /// Revision of a Hub model id (branch, tag or commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default)]
    pub dtype: DType,
    #[serde(default)]
    pub device: DeviceChoice,
    /// Store the blocks' linear layers quantized for inference (`none` | `int8` | `int4`); training refuses it.
    #[serde(default, skip_serializing_if = "is_none")]
    pub quantize: Quantize,
    /// Spread the blocks over several devices: `auto` (by free GPU memory) or one device per block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_map: Option<DeviceMap>,
}

fn is_none(q: &Quantize) -> bool {
    *q == Quantize::None
}

impl ModelSource {
    /// A local folder with the default dtype and device.
    pub fn local(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            revision: None,
            dtype: DType::default(),
            device: DeviceChoice::default(),
            quantize: Quantize::None,
            device_map: None,
        }
    }
}

/// A frozen model and its tokenizer, loaded from one checkpoint.
pub struct Backbone {
    /// How the config named it (what reports and saved prompts record).
    pub source: ModelSource,
    /// The folder or GGUF file it was loaded from.
    pub dir: PathBuf,
    pub model: Model,
    pub tokenizer: Tokenizer,
}

impl Backbone {
    /// Loads the model in `dir` (dtype and device as `source` says) and its tokenizer. `dir` is a local Hugging
    /// Face folder, a `.gguf` file, or a folder holding one (dequantized to the dtype on load): this never downloads
    /// or builds anything.
    pub fn load(source: &ModelSource, dir: &Path) -> Result<Self> {
        ensure!(dir.exists(), "no folder or file {} (model.path, --model)", dir.display());
        let map = source.device_map.as_ref();
        let (kind, device) = (source.dtype.kind(), source.device.resolve()?);
        let (mut model, tokenizer, dir) = match gguf::checkpoint_file(dir)? {
            Some(file) => {
                let g = Gguf::open(&file)?;
                let model = Model::from_gguf(&g, kind, device, map)
                    .with_context(|| format!("cannot load the model in {}", file.display()))?;
                (model, Tokenizer::from_gguf(&g)?, file)
            }
            None => {
                let model = Model::from_dir_mapped(dir, kind, device, map)
                    .with_context(|| format!("cannot load the model in {}", dir.display()))?;
                (model, Tokenizer::from_dir(dir)?, dir.to_path_buf())
            }
        };
        model.quantize(source.quantize).context("model.quantize (--quantize)")?;
        Ok(Self { source: source.clone(), dir, model, tokenizer })
    }

    /// How the frozen weights are held, for cache fingerprints and reports: the dtype (`F32`), and `int8` or
    /// `int4` when the linear layers are quantized.
    pub fn weights(&self) -> String {
        match self.model.quantized() {
            Quantize::None => format!("{:?}", self.source.dtype),
            q => format!("{:?} {q}", self.source.dtype),
        }
    }

    /// The model as reports name it: its path, and `(int8)`/`(int4)` when its linear layers are quantized.
    pub fn name(&self) -> String {
        match self.model.quantized() {
            Quantize::None => self.source.path.display().to_string(),
            q => format!("{} ({q})", self.source.path.display()),
        }
    }

    /// Loads `source.path` as a local folder ([`Self::load`]).
    pub fn load_local(source: &ModelSource) -> Result<Self> {
        Self::load(source, &source.path)
    }
}
