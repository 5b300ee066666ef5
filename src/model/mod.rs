//! The frozen backbone: a GPT-2-architecture causal LM loaded from a Hugging Face checkpoint directory.

mod cache;
mod config;
mod gpt2;
mod weights;

pub use cache::KvCache;
pub use config::{Activation, Gpt2Config};
pub use gpt2::{Gpt2, Input};
