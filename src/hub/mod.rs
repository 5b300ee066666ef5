//! The Hugging Face Hub (or a mirror at `HF_ENDPOINT`): prompts and backbones pulled by repo id into Python's
//! cache layout, prompts pushed with a model card. The token comes from `HF_TOKEN`, the file at `HF_TOKEN_PATH`
//! or `$HF_HOME/token`, as in Python.

mod card;
mod pull;
mod push;

use anyhow::{anyhow, Result};
use hf_hub::{HFClient, HFClientSync};

pub use card::model_card;
pub use pull::{pull_model, pull_prompt, resolve_model, resolve_prompt};
pub use push::{push, Pushed};

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

/// The token Python's client would send, in its order: `HF_TOKEN`, the file at `HF_TOKEN_PATH`, `$HF_HOME/token`;
/// none when `HF_HUB_DISABLE_IMPLICIT_TOKEN` is set. hf-hub reads the same places but does not say what it found.
pub fn token() -> Option<String> {
    let set = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty());
    if set("HF_HUB_DISABLE_IMPLICIT_TOKEN").is_some() {
        return None;
    }
    let file = |path: std::path::PathBuf| {
        std::fs::read_to_string(path).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
    };
    set("HF_TOKEN")
        .or_else(|| set("HF_TOKEN_PATH").and_then(|p| file(p.into())))
        .or_else(|| file(hf_hub::hf_home().join("token")))
}

/// A client that sends `token` (the rest from the environment).
fn client_with_token(token: &str) -> Result<HFClientSync> {
    let inner = HFClient::builder().token(token).build();
    inner.and_then(HFClientSync::from_inner).map_err(|e| anyhow!("cannot set up the Hugging Face Hub client: {e}"))
}

/// Lower-case hex of a digest.
fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Git's blob id of `bytes`: what the Hub reports as the oid of a regular (non-LFS) file.
fn git_blob_sha1(bytes: &[u8]) -> String {
    use sha1::Digest;
    let mut git = sha1::Sha1::new();
    git.update(format!("blob {}\0", bytes.len()));
    git.update(bytes);
    hex(&git.finalize())
}

/// The sha256 of `bytes`: the oid of an LFS file.
fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
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
