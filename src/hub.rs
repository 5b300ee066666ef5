//! The Hugging Face Hub (or a mirror at `HF_ENDPOINT`): prompts pulled by repo id into the cache Python's
//! `huggingface_hub` uses (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`), with the token
//! from `HF_TOKEN` or the token file. `HF_HUB_OFFLINE=1` reads the cache only, as Python does.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use hf_hub::{HFClientSync, HFError};

/// `owner/name`, optionally `@revision` (a branch, tag or commit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoId {
    pub owner: String,
    pub name: String,
    pub revision: Option<String>,
}

impl RepoId {
    /// A Hub id when `text` has that shape (`user/repo`, `user/repo@v1`), `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let (id, revision) = match text.split_once('@') {
            Some((id, rev)) if !rev.is_empty() => (id, Some(rev.to_string())),
            Some(_) => return None,
            None => (text, None),
        };
        let (owner, name) = id.split_once('/')?;
        let part = |s: &str| {
            !s.is_empty()
                && !s.starts_with(['.', '-'])
                && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        (part(owner) && part(name)).then(|| Self { owner: owner.into(), name: name.into(), revision })
    }

    fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }
}

impl std::fmt::Display for RepoId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)?;
        match &self.revision {
            Some(rev) => write!(f, "@{rev}"),
            None => Ok(()),
        }
    }
}

/// Whether `HF_HUB_OFFLINE` asks for the cache only (1, true, yes, on).
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

/// A client configured from the environment (`HF_ENDPOINT`, `HF_TOKEN`, `HF_HOME`, `HF_HUB_CACHE`).
pub fn client() -> Result<HFClientSync> {
    HFClientSync::new().map_err(|e| anyhow!("cannot set up the Hugging Face Hub client: {e}"))
}

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
    use sha1::Digest;
    let blob = std::fs::canonicalize(path).with_context(|| format!("cannot follow {}", path.display()))?;
    let etag = blob.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    let bytes = std::fs::read(&blob).with_context(|| format!("cannot read {}", blob.display()))?;
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let sha256 = hex(&sha2::Sha256::digest(&bytes));
    let mut git = sha1::Sha1::new();
    git.update(format!("blob {}\0", bytes.len()));
    git.update(&bytes);
    if etag == sha256 || etag == hex(&git.finalize()) {
        return Ok(());
    }
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(&blob);
    bail!("the downloaded {} bytes do not match the file's checksum {etag}; removed from the cache", bytes.len())
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

/// Downloads into the cache, for each group of `files`, the first file the repo has (e.g. safetensors, else a
/// `.bin`), and those of `optional` it has; returns the snapshot folder holding them. Offline, or when the Hub
/// cannot be reached, the cached snapshot serves. A failed download leaves no partial file in the cache.
pub fn pull(repo: &RepoId, files: &[&[&str]], optional: &[&str]) -> Result<PathBuf> {
    let offline = offline();
    let client = client()?;
    let handle = client.model(repo.owner.clone(), repo.name.clone());
    // One file into the cache, checked; `None` when the repo (or, offline, the cache) does not have it.
    let fetch = |file: &str| -> Result<Option<PathBuf>> {
        let got = handle
            .download_file()
            .filename(file.to_string())
            .revision(repo.revision().to_string())
            .local_files_only(offline)
            .send();
        match got {
            Ok(path) => {
                verify(&path).with_context(|| format!("{repo}: {file}"))?;
                Ok(Some(path))
            }
            Err(HFError::EntryNotFound { .. }) => Ok(None),
            Err(HFError::LocalEntryNotFound { .. }) if optional.contains(&file) => Ok(None),
            Err(e) => Err(explain(e, repo, file, offline)),
        }
    };
    let mut snapshot: Option<PathBuf> = None;
    for group in files {
        let mut found = None;
        for file in *group {
            found = fetch(file)?;
            if found.is_some() {
                break;
            }
        }
        let Some(path) = found else {
            // Report the last name of the group.
            let last = group.last().copied().unwrap_or_default();
            let no_file = HFError::EntryNotFound { path: last.into(), repo_id: repo.to_string(), context: None };
            return Err(if offline { explain(no_file, repo, last, true) } else { missing(&handle, repo, last) });
        };
        snapshot.get_or_insert(path.parent().context("a cached file has a folder")?.to_path_buf());
    }
    for file in optional {
        fetch(file)?;
    }
    snapshot.ok_or_else(|| anyhow!("{repo}: nothing to download"))
}

/// `path` itself, unless nothing is there and it reads as a Hub id (`owner/name[@rev]`): then that repo pulled
/// into the cache (`files` and `optional` as for [`pull`]), and its snapshot folder.
pub fn resolve(path: &Path, files: &[&[&str]], optional: &[&str]) -> Result<PathBuf> {
    match RepoId::parse(&path.to_string_lossy()) {
        Some(repo) if !path.exists() => pull(&repo, files, optional),
        _ => Ok(path.to_path_buf()),
    }
}

/// [`resolve`] for a model folder: config, weights (safetensors, sharded safetensors with every shard, or
/// `pytorch_model.bin`) and the tokenizer files the repo has.
pub fn resolve_model(path: &Path) -> Result<PathBuf> {
    const WEIGHTS: [&str; 3] = ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"];
    const TOKENIZER: [&str; 6] = [
        "tokenizer.json",
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
    ];
    let dir = resolve(path, &[&["config.json"], &WEIGHTS], &TOKENIZER)?;
    let index = dir.join(WEIGHTS[1]);
    if dir != path && index.is_file() && !dir.join(WEIGHTS[0]).is_file() {
        let text = std::fs::read_to_string(&index).with_context(|| format!("cannot read {}", index.display()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", index.display()))?;
        let mut shards: Vec<&str> =
            json["weight_map"].as_object().into_iter().flatten().filter_map(|(_, v)| v.as_str()).collect();
        shards.sort_unstable();
        shards.dedup();
        let groups: Vec<&[&str]> = shards.iter().map(std::slice::from_ref).collect();
        let repo = RepoId::parse(&path.to_string_lossy()).expect("resolve pulled it, so it is a Hub id");
        pull(&repo, &groups, &[])?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_parse_and_paths_do_not() {
        let id = RepoId::parse("konodyuk/prompt_rugpt3large_joke@v1.0").unwrap();
        assert_eq!(
            (id.owner.as_str(), id.name.as_str(), id.revision.as_deref()),
            ("konodyuk", "prompt_rugpt3large_joke", Some("v1.0"))
        );
        assert_eq!(id.to_string(), "konodyuk/prompt_rugpt3large_joke@v1.0");
        assert_eq!(RepoId::parse("ai-forever/rugpt3small_based_on_gpt2").unwrap().revision, None);
        for path in ["runs/terra/prompt", "./runs/x", "/abs/path", "runs", "a/b@", "../x/y", "a b/c"] {
            assert_eq!(RepoId::parse(path), None, "{path}");
        }
    }
}
