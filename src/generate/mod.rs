//! Generation with or without prompts: decoding settings, batched KV-cache decoding, and the two ruPrompts
//! pipelines (text generation after a prompt prefix; text2text from a formatted row).

mod beam;
pub mod catalogue;
mod continuous;
mod decode;
mod logits;
mod pipeline;
mod settings;

pub use continuous::{Batcher, Job, TokenLogprobs, Update};
pub use decode::{cut_at_stop, generate, generate_watched, settled, Generated, Watch};
pub use pipeline::{Output, Pipeline, Prompts, Request, Task, TextWatch};
pub use settings::{EarlyStopping, GenerationConfig};
