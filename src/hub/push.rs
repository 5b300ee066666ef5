//! Pushing a trained prompt to a Hub repo: created when missing, one commit holding `prompt.json`, the weights
//! (safetensors and ruPrompts' `prompt_provider.bin`), the provider state and a model card. Files the branch
//! already has byte for byte are left out, so pushing the same prompt twice commits nothing.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, ensure, Context, Result};
use hf_hub::repository::{CommitOperation, RepoTreeEntry};
use hf_hub::{HFError, HFRepositorySync, RepoTypeModel};
use tch::Device;

use super::{client_with_token, git_blob_sha1, model_card, sha256, token, RepoId};
use crate::prompt::{Prompt, PROMPT_FILE, STATE_FILE, TORCH_FILE, WEIGHTS_FILE};
use crate::report::{Report, REPORT_JSON};

/// The prompt's files, as `save_pretrained` writes them; `prompt.json` is required, the rest pushed when present.
const PROMPT_FILES: [&str; 4] = [PROMPT_FILE, WEIGHTS_FILE, TORCH_FILE, STATE_FILE];
const CARD_FILE: &str = "README.md";

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// A new commit on the branch, changing these files.
    Committed { commit: String, url: String, changed: Vec<String>, deleted: Vec<String> },
    /// The branch already holds exactly these files (at this commit).
    Unchanged { commit: String },
}

/// What a Hub error during `step` of a push to `repo` means, in words that say what to do.
fn explain(e: HFError, repo: &RepoId, step: &str) -> anyhow::Error {
    let branch = repo.revision();
    match e {
        HFError::AuthRequired { .. } => anyhow!(
            "{repo}: the Hub rejected the token (401) while {step}: it is invalid or expired; set HF_TOKEN to a token \
             with write access"
        ),
        HFError::Forbidden { .. } => anyhow!(
            "{repo}: the token may not write to this repository (403) ({step}): it is read-only, or '{}' is neither \
             your account nor an organization you can write to",
            repo.owner
        ),
        HFError::RepoNotFound { .. } => anyhow!("{repo}: the repository is not there (or not visible to the token)"),
        HFError::RevisionNotFound { .. } => anyhow!("{repo}: the repository has no branch '{branch}'"),
        HFError::Conflict { .. } => anyhow!(
            "{repo}: the Hub reported a conflict (409) while {step}: another change to '{branch}' was under way; push \
             again"
        ),
        HFError::Http { context } if context.status.as_u16() == 412 => anyhow!(
            "{repo}: '{branch}' moved while pushing (412: someone else committed); push again to commit on top of it"
        ),
        e @ HFError::Request { .. } => anyhow!(
            "{repo}: the connection to the Hub failed while {step} ({e}); pushing again is safe: it commits only what \
             the branch does not already have"
        ),
        e => anyhow!("{repo}: {step} failed: {e}"),
    }
}

/// The file bytes to push from `dir`: the prompt's files it has and the generated model card.
fn local_files(dir: &Path, repo: &RepoId) -> Result<Vec<(String, Vec<u8>)>> {
    ensure!(
        dir.is_dir(),
        "{}: no such folder (give a training run's output_dir, or a folder written by save_pretrained)",
        dir.display()
    );
    ensure!(dir.join(PROMPT_FILE).is_file(), "{}: no {PROMPT_FILE} here: not a saved prompt", dir.display());
    // Loading checks that what goes up is a whole, readable prompt; the card describes it.
    let prompt = Prompt::from_pretrained(dir, Device::Cpu)?;
    let report_path = dir.join("eval").join(REPORT_JSON);
    let report: Option<Report> = if report_path.is_file() {
        let text =
            std::fs::read_to_string(&report_path).with_context(|| format!("cannot read {}", report_path.display()))?;
        Some(serde_json::from_str(&text).with_context(|| format!("{} is not a report", report_path.display()))?)
    } else {
        None
    };
    let mut files = vec![];
    for name in PROMPT_FILES {
        let path = dir.join(name);
        if path.is_file() {
            files.push((
                name.to_string(),
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
            ));
        }
    }
    files.push((CARD_FILE.to_string(), model_card(repo, &prompt, report.as_ref()).into_bytes()));
    Ok(files)
}

/// The branch head: created from `main` when the branch is new.
fn head(handle: &HFRepositorySync<RepoTypeModel>, repo: &RepoId) -> Result<String> {
    let branch = repo.revision().to_string();
    let info = match handle.info().revision(branch.clone()).send() {
        Err(HFError::RevisionNotFound { .. }) if branch != "main" => {
            handle.create_branch().branch(&branch).send().map_err(|e| explain(e, repo, "creating the branch"))?;
            handle.info().revision(branch).send()
        }
        other => other,
    };
    let info = info.map_err(|e| explain(e, repo, "reading the branch"))?;
    info.sha.ok_or_else(|| anyhow!("{repo}: the Hub did not say which commit the branch is at"))
}

/// The oids of the branch's prompt files and card at `commit`: git's blob sha1 for regular files, the sha256
/// (the file's ETag) for LFS files, whose tree oid is that of the pointer.
fn remote_oids(
    handle: &HFRepositorySync<RepoTypeModel>,
    repo: &RepoId,
    commit: &str,
) -> Result<HashMap<String, String>> {
    let listing = |e| explain(e, repo, "listing the branch's files");
    let tree = handle.list_tree().revision(commit.to_string()).recursive(true).send().map_err(listing)?;
    let mut oids = HashMap::new();
    for entry in tree {
        let RepoTreeEntry::File { path, oid, lfs, .. } = entry else { continue };
        if !PROMPT_FILES.contains(&path.as_str()) && path != CARD_FILE {
            continue;
        }
        let oid = match lfs {
            None => oid,
            Some(_) => handle.get_file_metadata().filepath(path.clone()).revision(commit).send().map_err(listing)?.etag,
        };
        oids.insert(path, oid);
    }
    Ok(oids)
}

/// Pushes the prompt saved in `dir` to `repo` (`owner/name`, its revision the branch; `main` by default), creating
/// the repo (`private` when new) and the branch as needed. Needs a token with write access.
pub fn push(dir: &Path, repo: &RepoId, private: bool) -> Result<Pushed> {
    let files = local_files(dir, repo)?;
    let Some(token) = token() else {
        bail!(
            "pushing to the Hub needs a token with write access: set HF_TOKEN, or log in with `hf auth login` (it \
             saves one in $HF_HOME/token)"
        );
    };
    let client = client_with_token(&token)?;
    client
        .create_repository()
        .repo_id(&format!("{}/{}", repo.owner, repo.name))
        .repo_type(RepoTypeModel)
        .private(private)
        .exist_ok(true)
        .send()
        .map_err(|e| explain(e, repo, "creating the repository"))?;
    let handle = client.model(repo.owner.clone(), repo.name.clone());
    let parent = head(&handle, repo)?;
    let remote = remote_oids(&handle, repo, &parent)?;
    let same = |name: &str, bytes: &[u8]| {
        remote.get(name).is_some_and(|oid| *oid == git_blob_sha1(bytes) || *oid == sha256(bytes))
    };
    let changed: Vec<(String, Vec<u8>)> = files.iter().filter(|(n, b)| !same(n, b)).cloned().collect();
    // A prompt file the branch has but this prompt lacks would be loaded with it: it goes.
    let deleted: Vec<String> = PROMPT_FILES
        .iter()
        .filter(|n| remote.contains_key(**n) && !files.iter().any(|(f, _)| f == *n))
        .map(|n| n.to_string())
        .collect();
    if changed.is_empty() && deleted.is_empty() {
        return Ok(Pushed::Unchanged { commit: parent });
    }
    let mut operations: Vec<CommitOperation> =
        changed.iter().map(|(n, b)| CommitOperation::add_bytes(n.clone(), b.clone())).collect();
    operations.extend(deleted.iter().map(CommitOperation::delete));
    let info = handle
        .create_commit()
        .operations(operations)
        .commit_message(format!("Push prompt from {}", dir.display()))
        .revision(repo.revision().to_string())
        .parent_commit(parent)
        .send()
        .map_err(|e| explain(e, repo, "committing"))?;
    Ok(Pushed::Committed {
        commit: info.commit_oid.unwrap_or_default(),
        url: info.commit_url.unwrap_or_default(),
        changed: changed.into_iter().map(|(n, _)| n).collect(),
        deleted,
    })
}
