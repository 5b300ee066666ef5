//! Prompt tuning: the optimizer, the learning-rate schedule and the training loop.

pub mod checkpoint;
pub mod metrics;
mod optim;
mod schedule;
mod trainer;

pub use optim::{AdamW, AdamWConfig};
pub use schedule::{ScheduleConfig, ScheduleKind};
pub use trainer::{resume_config, train, TrainOptions, TrainReport, CONFIG_FILE};
