//! Prompt tuning: the optimizer, the learning-rate schedule and the training loop.

pub mod checkpoint;
mod config;
mod dataset;
mod optim;
pub mod run_log;
mod schedule;
mod trainer;

pub use config::{FormatConfig, TrainConfig, TrainingConfig};
pub use dataset::{DatasetConfig, Splits};
pub use optim::{AdamW, AdamWConfig};
pub use schedule::{ScheduleConfig, ScheduleKind};
pub use trainer::{resume_config, train, TrainOptions, TrainReport, CONFIG_FILE};
