//! The frozen backbone: a causal LM (GPT-2 or the Llama family) loaded from a Hugging Face checkpoint directory.

mod cache;
mod deep;
mod gemv;
mod gguf;
mod gpt2;
mod gpt2_config;
mod llama;
mod llama_config;
mod llama_row;
mod lm;
mod mask;
mod pad;
mod quant;
mod source;
mod weights;

pub use cache::KvCache;
pub use deep::DeepKv;
pub use gemv::row_times;
pub use gguf::ARCHITECTURES as GGUF_ARCHITECTURES;
pub use gpt2_config::{Activation, Gpt2Config};
pub use llama_config::{Family, LlamaConfig, Rope, RopeScaling};
pub use lm::{Dims, Input, Model, SUPPORTED};
pub use pad::{pad, Side};
pub use quant::Quantize;
pub use source::{Backbone, ModelSource};
