//! Backbones and their files: GGUF, quantized weights, device maps, tokenizers, the real SmolLM2 model, and bad
//! checkpoints.
//!
//! One test binary for the whole area, as each binary links libtorch: a module per file, helpers in tests/common.

#[path = "../common/mod.rs"]
mod common;

mod device_map;
mod gguf;
mod model_errors;
mod quantize;
mod real_model;
mod tokenizer;
