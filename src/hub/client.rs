//! The Hub client as Python's `huggingface_hub` configures it: endpoint, cache, offline mode and token from the
//! environment; the digests the Hub names files by.

use anyhow::{anyhow, Result};
use hf_hub::{HFClient, HFClientSync};

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
pub(super) fn client_with_token(token: &str) -> Result<HFClientSync> {
    let inner = HFClient::builder().token(token).build();
    inner.and_then(HFClientSync::from_inner).map_err(|e| anyhow!("cannot set up the Hugging Face Hub client: {e}"))
}

/// Lower-case hex of a digest.
fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Git's blob id of `bytes`: what the Hub reports as the oid of a regular (non-LFS) file.
pub(super) fn git_blob_sha1(bytes: &[u8]) -> String {
    use sha1::Digest;
    let mut git = sha1::Sha1::new();
    git.update(format!("blob {}\0", bytes.len()));
    git.update(bytes);
    hex(&git.finalize())
}

/// The sha256 of `bytes`: the oid of an LFS file.
pub(super) fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}
