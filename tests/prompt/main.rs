//! Prompts as files: saving and loading (ours, Python ruPrompts', PEFT's), `ruprompts inspect`, and the Hub.
//!
//! One test binary for the whole area, as each binary links libtorch: a module per file, helpers in tests/common.

#[path = "../common/mod.rs"]
mod common;
#[cfg(feature = "hub")]
#[path = "../common/hub.rs"]
mod fake_hub;

mod hub;
mod inspect;
mod prompt_io;
