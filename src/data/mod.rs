//! Training data: rows read from files with their origin, encoded into examples, grouped into batches.

mod batch;
mod files;
mod preprocess;

pub use batch::{collate, epoch_batches, Batch};
pub use files::{read_rows, split_file, Origin, Record};
pub use preprocess::{Example, PreprocessConfig, Preprocessor, TooLong, TooLongPolicy, IGNORE};
