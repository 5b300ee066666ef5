//! `ruprompts serve`: the OpenAI-compatible server, checked with its own requests and with real clients.
//!
//! One test binary for the whole area, as each binary links libtorch: a module per file, helpers in tests/common.

#[path = "../common/mod.rs"]
mod common;

mod serve;
