//! Evaluation and tasks: scoring, classification, few-shot demonstrations, Russian SuperGLUE and task files,
//! error bars, `ruprompts eval` and `ruprompts rsg`.
//!
//! One test binary for the whole area, as each binary links libtorch: a module per file, helpers in tests/common.

#[path = "../common/mod.rs"]
mod common;

mod classify;
mod eval_cli;
mod fewshot;
mod rsg;
mod score;
mod stats;
mod taskfile;
mod tasks;
