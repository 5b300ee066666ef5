//! Parity with the Python tools on tiny checkpoints: transformers (GPT-2, Llama family), Python ruPrompts (formats,
//! preprocessing, providers, training steps), PEFT (deep prompts) and lm-evaluation-harness (references in
//! tests/fixtures/reference and tests/fixtures/lm-eval, made by tests/fixtures/scripts).
//!
//! One test binary for the whole area, as each binary links libtorch: a module per file, helpers in tests/common.

#[path = "../common/mod.rs"]
mod common;

mod format_parity;
mod gpt2_parity;
mod llama_parity;
mod lm_eval_parity;
mod prefix_parity;
mod preprocess_parity;
mod prompt_parity;
mod train_parity;
