//! The Hugging Face Hub (or a mirror at `HF_ENDPOINT`): prompts and backbones pulled by repo id into Python's
//! cache layout, prompts pushed with a model card. The token comes from `HF_TOKEN`, the file at `HF_TOKEN_PATH`
//! or `$HF_HOME/token`, as in Python. Everything but the repo id needs the `hub` cargo feature (on by default).

mod id;

pub use id::RepoId;

#[cfg(feature = "hub")]
mod card;
#[cfg(feature = "hub")]
mod client;
#[cfg(feature = "hub")]
mod pull;
#[cfg(feature = "hub")]
mod push;

#[cfg(feature = "hub")]
pub use card::model_card;
#[cfg(feature = "hub")]
pub use client::{client, offline, token};
#[cfg(feature = "hub")]
use client::{client_with_token, git_blob_sha1, sha256};
#[cfg(feature = "hub")]
pub use pull::{pull_gguf, pull_model, pull_prompt};
#[cfg(feature = "hub")]
pub use push::{push, Pushed};
