//! ruprompts: continuous prompt tuning ("P-tuning") of frozen GPT-2-style language models on libtorch.
//!
//! - [`model`] — the frozen GPT-2 backbone (Hugging Face checkpoints, KV cache, f32/bf16/f16).
//! - [`tokenizer`] — byte-level BPE tokenizers of those checkpoints, with added prompt tokens.
//! - [`generate`] — decoding: greedy and sampling, with a KV cache, prompts injected anywhere.
//! - [`format`] — ruPrompts' template language (`<P*N>{field}`, `<P>phrase</P>`) compiled against a tokenizer.
//! - [`provider`] — what produces the soft tokens: a plain tensor, a BiLSTM or an MLP.
//! - [`prompt`] — format + provider: injection into the model, multi-prompts, save/load, ruPrompts/PEFT files.
//! - [`data`] — datasets (jsonl/csv/tsv, Russian SuperGLUE files), preprocessing into examples, batching.
//! - [`train`] — the training loop: AdamW on the prompt only, schedules, checkpoints, resume, metrics.
//! - [`eval`] — perplexity-based classification (naive and shared-context scoring) and task metrics.
//! - [`config`] — the YAML run configuration.
//! - [`hub`] — the Hugging Face Hub: prompts and models pulled into Python's cache layout, prompts pushed with a card.
//! - [`rng`] — seeded draws from libtorch's one generator, safe across threads.
//! - [`demo`] — the tiny Russian model the project builds for its demo.

pub mod cli;
pub mod config;
pub mod data;
pub mod demo;
pub mod device;
pub mod eval;
pub mod format;
pub mod fs;
pub mod generate;
pub mod hub;
pub mod model;
pub mod prompt;
pub mod provider;
pub mod report;
pub mod resolve;
pub mod rng;
pub mod tokenizer;
pub mod train;
