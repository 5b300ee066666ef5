//! Generation with or without prompts: decoding settings, batched KV-cache decoding, and the two ruPrompts
//! pipelines (text generation after a prompt prefix; text2text from a formatted row).

mod batch;
mod beam;
pub mod catalogue;
mod continuous;
mod decode;
mod logits;
mod pipeline;
mod settings;
mod stops;

pub use batch::Generated;
pub use continuous::{Batcher, Job, TokenLogprobs, Update};
pub use decode::{generate, generate_watched, Watch};
pub use pipeline::{Output, Pipeline, Prompts, Request, Task, TextWatch};
pub use settings::{EarlyStopping, GenerationConfig};
pub use stops::{cut_at_stop, settled};
