//! Reading a YAML config: one file (optionally `extends:` others) plus `key.sub=value` overrides, typed as the
//! caller asks, with every error naming the key and where it was written (file:line, or the override). The
//! configs themselves are defined by their users (`train::TrainConfig`, `eval::TaskFormats`).

mod load;
mod locate;

pub use load::{load, load_valid, Source, Validate};
