//! The edge where names become local folders: `demo` (the bundled tiny model, built on first use), Hub ids
//! (pulled into the Hugging Face cache) and folders as they are. The CLI calls this; everything below it loads
//! local folders only, so a function named `load` or `from_pretrained` never builds or downloads.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::hub::RepoId;
use crate::model::{Backbone, ModelSource};
use crate::progress::Progress;

/// The folder (or GGUF file) of the backbone `source` names: `demo` (built first when missing, reporting to
/// `progress`), a local folder or `.gguf` file, or a Hub id (with `source.revision`) pulled into the cache: a
/// model repo, or one GGUF file of it (`owner/name/FILE.gguf`).
pub fn model_dir(source: &ModelSource, progress: &dyn Progress) -> Result<PathBuf> {
    if source.path.as_os_str() == "demo" {
        return crate::demo::ensure_model(source.device.resolve()?, progress);
    }
    if source.path.is_file() {
        // A .gguf file is a checkpoint; any other file is refused with what is expected.
        crate::gguf::checkpoint_file(&source.path)?;
        return Ok(source.path.clone());
    }
    let named = match &source.revision {
        Some(rev) if !source.path.exists() => PathBuf::from(format!("{}@{rev}", source.path.display())),
        _ => source.path.clone(),
    };
    if !named.exists() {
        if let Some((repo, file)) = RepoId::parse_gguf(&named.to_string_lossy()) {
            let what =
                format!("no file {} (model.path, --model), and as a Hub id {repo}, file {file}", named.display());
            return pull_gguf(&repo, &file).map_err(|e| e.context(what));
        }
    }
    folder_or_hub(&named, "model.path, --model", pull_model)
}

/// The backbone `source` names ([`model_dir`]), loaded.
pub fn backbone(source: &ModelSource, progress: &dyn Progress) -> Result<Backbone> {
    Backbone::load(source, &model_dir(source, progress)?)
}

/// The folder of the prompt `path` names: a local folder, or a Hub id (`owner/name[@rev]`) pulled into the cache.
/// `what` says where the name was given (`--prompt`).
pub fn prompt_dir(path: &Path, what: &str) -> Result<PathBuf> {
    folder_or_hub(path, what, pull_prompt)
}

/// `path` when it is a folder; else, when it reads as `owner/name[@rev]`, what `pull` makes of that Hub id, its
/// error prefixed with "no folder": a mistyped local path is reported as such first.
fn folder_or_hub(path: &Path, what: &str, pull: fn(&RepoId) -> Result<PathBuf>) -> Result<PathBuf> {
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.exists() {
        bail!("{} ({what}) is a file, not a folder", path.display());
    }
    let missing = format!("no folder {} ({what})", path.display());
    match RepoId::parse(&path.to_string_lossy()) {
        Some(repo) => pull(&repo).map_err(|e| e.context(format!("{missing}, and as a Hub id {repo}"))),
        None => bail!("{missing}, and it is no Hub id (owner/name)"),
    }
}

#[cfg(feature = "hub")]
fn pull_model(repo: &RepoId) -> Result<PathBuf> {
    crate::hub::pull_model(repo)
}

#[cfg(feature = "hub")]
fn pull_prompt(repo: &RepoId) -> Result<PathBuf> {
    crate::hub::pull_prompt(repo)
}

#[cfg(feature = "hub")]
fn pull_gguf(repo: &RepoId, file: &str) -> Result<PathBuf> {
    crate::hub::pull_gguf(repo, file)
}

#[cfg(not(feature = "hub"))]
fn pull_model(repo: &RepoId) -> Result<PathBuf> {
    no_hub(repo)
}

#[cfg(not(feature = "hub"))]
fn pull_gguf(repo: &RepoId, _file: &str) -> Result<PathBuf> {
    no_hub(repo)
}

#[cfg(not(feature = "hub"))]
fn pull_prompt(repo: &RepoId) -> Result<PathBuf> {
    no_hub(repo)
}

#[cfg(not(feature = "hub"))]
fn no_hub(repo: &RepoId) -> Result<PathBuf> {
    bail!("this build has no Hub client (built without the `hub` cargo feature), so {repo} cannot be pulled")
}
