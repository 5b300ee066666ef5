//! Training data: rows read from files with their origin, encoded into examples, grouped into batches.

mod batch;
mod dataset;
mod files;
mod preprocess;

pub use batch::{collate, epoch_batches, pad, Batch, Side};
pub use dataset::{split_file, DatasetConfig, RsgTask, Splits};
pub use files::{read_rows, Origin, Record};
pub use preprocess::{Example, PreprocessConfig, Preprocessor, TooLong, TooLongPolicy, IGNORE};
