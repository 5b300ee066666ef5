//! Generation: parity of decoding with transformers, the `generate` command and chat templates.
//!
//! One test binary for the whole area, as each binary links libtorch: a module per file, helpers in tests/common.

#[path = "../common/mod.rs"]
mod common;

mod chat;
mod generate;
mod generate_cli;
