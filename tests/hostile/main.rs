//! Input that is wrong or random: clear errors naming the culprit, and property tests that nothing panics.
//!
//! One test binary for the whole area, as each binary links libtorch: a module per file, helpers in tests/common.

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod fuzz;
