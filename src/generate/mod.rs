//! Generation with or without prompts: decoding settings, batched KV-cache decoding, and the two ruPrompts
//! pipelines (text generation after a prompt prefix; text2text from a formatted row).

mod config;
mod decode;
mod logits;
mod pipeline;

pub use config::GenerationConfig;
pub use decode::{generate, Generated};
pub use pipeline::{Pipeline, Prompts, Request, Task};
