//! Generation with or without prompts: decoding settings, batched KV-cache decoding, and the two ruPrompts
//! pipelines (text generation after a prompt prefix; text2text from a formatted row).

mod decode;
mod logits;
mod pipeline;
mod settings;

pub use decode::{generate, Generated};
pub use pipeline::{Pipeline, Prompts, Request, Task};
pub use settings::GenerationConfig;
