//! Downloads by repo id into the cache Python's `huggingface_hub` uses (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`). `HF_HUB_OFFLINE=1` reads the cache only, as Python does.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use hf_hub::HFError;

use super::{client, git_blob_sha1, offline, sha256, RepoId};
use crate::prompt::{PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE, PROMPT_FILE, STATE_FILE, TORCH_FILE, WEIGHTS_FILE};

/// What a Hub error means for `repo`, in words that say what to do.
fn explain(e: HFError, repo: &RepoId, file: &str, offline: bool) -> anyhow::Error {
    let rev = repo.revision();
    match e {
        HFError::RepoNotFound { .. } => {
            anyhow!("{repo}: no such repository on the Hub (or it is private and the token cannot see it)")
        }
        HFError::RevisionNotFound { .. } => anyhow!("{repo}: the repository has no revision '{rev}'"),
        HFError::EntryNotFound { .. } => anyhow!("{repo}: revision '{rev}' has no file {file}"),
        HFError::AuthRequired { .. } => {
            anyhow!("{repo}: the Hub asks for authentication (401): set HF_TOKEN or log in with `hf auth login`")
        }
        HFError::Forbidden { .. } => anyhow!("{repo}: the token is not allowed to read this repository (403)"),
        e @ HFError::LocalEntryNotFound { .. } if offline => {
            anyhow!("{repo}: {file} is not in the Hugging Face cache and HF_HUB_OFFLINE is set ({e})")
        }
        HFError::Request { source, .. } if !(source.is_connect() || source.is_timeout()) => anyhow!(
            "{repo}: the transfer of {file} broke off ({source}); nothing partial was kept in the cache; try again"
        ),
        e @ (HFError::Request { .. } | HFError::LocalEntryNotFound { .. }) => {
            anyhow!("{repo}: cannot reach the Hub to get {file}, and it is not in the cache ({e})")
        }
        e => anyhow!("{repo}: downloading {file} failed: {e}"),
    }
}

/// Checks a cached file against the name of its blob, which is the server's ETag: the sha256 of the content (LFS
/// files) or git's blob sha1 (regular files). hf-hub stores whatever body a download got, an error page included;
/// such a blob and its snapshot link are removed, so the cache never holds a wrong file.
fn verify(path: &Path) -> Result<()> {
    let blob = std::fs::canonicalize(path).with_context(|| format!("cannot follow {}", path.display()))?;
    let etag = blob.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    let bytes = std::fs::read(&blob).with_context(|| format!("cannot read {}", blob.display()))?;
    if etag == sha256(&bytes) || etag == git_blob_sha1(&bytes) {
        return Ok(());
    }
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(&blob);
    bail!("the downloaded {} bytes do not match the file's checksum {etag}; removed from the cache", bytes.len())
}

/// Removes the partial downloads (`blobs/*.incomplete`) a failed transfer left in `repo`'s cache folder: hf-hub
/// keeps them, but a cache should hold whole files only.
fn remove_incomplete(repo: &RepoId) {
    let blobs = hf_hub::resolve_cache_dir().join(format!("models--{}--{}", repo.owner, repo.name)).join("blobs");
    for entry in std::fs::read_dir(blobs).into_iter().flatten().flatten() {
        if entry.path().extension().is_some_and(|e| e == "incomplete") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Why `file` could not be had: a download answers 404 for a missing repo, revision and file alike, so the
/// repo's info at the revision tells them apart.
fn missing(handle: &hf_hub::HFRepositorySync<hf_hub::RepoTypeModel>, repo: &RepoId, file: &str) -> anyhow::Error {
    let no_file = HFError::EntryNotFound { path: file.into(), repo_id: repo.to_string(), context: None };
    match handle.info().revision(repo.revision().to_string()).send() {
        Ok(_) => explain(no_file, repo, file, false),
        Err(HFError::RevisionNotFound { context: Some(c), .. }) if c.error_code.as_deref() == Some("RepoNotFound") => {
            explain(HFError::RepoNotFound { repo_id: repo.to_string(), context: Some(c) }, repo, file, false)
        }
        Err(e) => explain(e, repo, file, false),
    }
}

/// What asking for one file came to.
enum Fetched {
    /// In the cache (downloaded now or before) and checked.
    File(PathBuf),
    /// The repo does not have it.
    Absent,
    /// Not in the cache, and the Hub cannot be asked (offline or unreachable): why, in words.
    Unavailable(anyhow::Error),
}

/// Downloads into the cache, for each group of `files`, the first file the repo has (e.g. safetensors, else a
/// `.bin`), and those of `optional` it has; returns the snapshot folder holding them. Offline, or when the Hub
/// cannot be reached, the cached snapshot serves, whichever file of a group it holds: a cache Python filled has
/// no marker for the files a repo lacks. A failed download leaves no partial file in the cache.
fn pull(repo: &RepoId, files: &[&[&str]], optional: &[&str]) -> Result<PathBuf> {
    let offline = offline();
    let client = client()?;
    let handle = client.model(repo.owner.clone(), repo.name.clone());
    let fetch = |file: &str| -> Result<Fetched> {
        let got = handle
            .download_file()
            .filename(file.to_string())
            .revision(repo.revision().to_string())
            .local_files_only(offline)
            .send();
        match got {
            Ok(path) => {
                verify(&path).with_context(|| format!("{repo}: {file}"))?;
                Ok(Fetched::File(path))
            }
            Err(HFError::EntryNotFound { .. }) => Ok(Fetched::Absent),
            Err(e) => {
                remove_incomplete(repo);
                let unreachable = matches!(&e, HFError::LocalEntryNotFound { .. })
                    || matches!(&e, HFError::Request { source, .. } if source.is_connect() || source.is_timeout());
                let why = explain(e, repo, file, offline);
                if unreachable {
                    Ok(Fetched::Unavailable(why))
                } else {
                    Err(why)
                }
            }
        }
    };
    let mut snapshot: Option<PathBuf> = None;
    for group in files {
        let (mut found, mut unavailable) = (None, None);
        for file in *group {
            match fetch(file)? {
                Fetched::File(path) => {
                    found = Some(path);
                    break;
                }
                Fetched::Absent => {}
                Fetched::Unavailable(why) => {
                    unavailable.get_or_insert(why);
                }
            }
        }
        let Some(path) = found else {
            if let Some(why) = unavailable {
                return Err(why);
            }
            // Name every file of the group: "has no file a or b".
            let names = group.join(" or ");
            let no_file = HFError::EntryNotFound { path: names.clone(), repo_id: repo.to_string(), context: None };
            return Err(if offline { explain(no_file, repo, &names, true) } else { missing(&handle, repo, &names) });
        };
        snapshot.get_or_insert(path.parent().context("a cached file has a folder")?.to_path_buf());
    }
    for file in optional {
        fetch(file)?;
    }
    snapshot.ok_or_else(|| anyhow!("{repo}: nothing to download"))
}

/// A prompt repo: `prompt.json`, the weights (safetensors, else ruPrompts' `prompt_provider.bin`) and our
/// provider state when there is one; or a PEFT adapter (`adapter_config.json`, `adapter_model.safetensors`).
pub fn pull_prompt(repo: &RepoId) -> Result<PathBuf> {
    let dir = pull(repo, &[&[PROMPT_FILE, PEFT_CONFIG_FILE]], &[])?;
    if dir.join(PROMPT_FILE).is_file() {
        pull(repo, &[&[WEIGHTS_FILE, TORCH_FILE]], &[STATE_FILE])
    } else {
        pull(repo, &[&[PEFT_WEIGHTS_FILE]], &[])
    }
}

/// A model repo: config, weights (safetensors, sharded safetensors with every shard, or `pytorch_model.bin`) and
/// the tokenizer files the repo has.
pub fn pull_model(repo: &RepoId) -> Result<PathBuf> {
    const WEIGHTS: [&str; 3] = ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"];
    const TOKENIZER: [&str; 6] = [
        "tokenizer.json",
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
    ];
    let dir = pull(repo, &[&["config.json"], &WEIGHTS], &TOKENIZER)?;
    let index = dir.join(WEIGHTS[1]);
    if index.is_file() && !dir.join(WEIGHTS[0]).is_file() {
        let text = std::fs::read_to_string(&index).with_context(|| format!("cannot read {}", index.display()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", index.display()))?;
        let mut shards: Vec<&str> =
            json["weight_map"].as_object().into_iter().flatten().filter_map(|(_, v)| v.as_str()).collect();
        shards.sort_unstable();
        shards.dedup();
        let groups: Vec<&[&str]> = shards.iter().map(std::slice::from_ref).collect();
        pull(repo, &groups, &[])?;
    }
    Ok(dir)
}

/// One GGUF file of a model repo (`file` a path inside it), with nothing else: its metadata holds the config and
/// the tokenizer. Returns the cached file.
pub fn pull_gguf(repo: &RepoId, file: &str) -> Result<PathBuf> {
    // `pull` gives the folder the file landed in, which for `q/model.gguf` is the snapshot's `q/`.
    let name = Path::new(file).file_name().context("a GGUF path names a file")?;
    Ok(pull(repo, &[&[file]], &[])?.join(name))
}
