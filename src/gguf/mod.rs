//! GGUF, llama.cpp's checkpoint format: a bounded reader of its metadata and tensor table, and dequantization of
//! its tensor types to f32. What the metadata means (a model's config, a tokenizer) is read by the model and
//! tokenizer modules.

mod blocks;
mod file;

pub use blocks::{GgmlType, READ};
pub use file::{Array, Gguf, TensorInfo, Value};

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The GGUF file a checkpoint path names: the path itself when it is a `.gguf` file, or the one `.gguf` file of
/// a folder that has no `config.json` (a Hugging Face folder wins). `None` for a Hugging Face folder.
pub fn checkpoint_file(path: &Path) -> Result<Option<PathBuf>> {
    let is_gguf = |p: &Path| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    if path.is_file() {
        if !is_gguf(path) {
            bail!(
                "{} is a file, but not a .gguf checkpoint: give a Hugging Face model folder or a .gguf file",
                path.display()
            );
        }
        return Ok(Some(path.to_path_buf()));
    }
    if !path.is_dir() || path.join("config.json").is_file() {
        return Ok(None);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && is_gguf(p))
        .collect();
    found.sort();
    match found.len() {
        0 | 1 => Ok(found.pop()),
        _ => {
            let names: Vec<String> =
                found.iter().filter_map(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).collect();
            bail!(
                "{} holds several .gguf files ({}) and no config.json: name one, e.g. {}",
                path.display(),
                names.join(", "),
                path.join(&names[0]).display()
            )
        }
    }
}
