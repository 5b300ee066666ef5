//! Prompt tuning: the optimizer, the learning-rate schedule and the training loop.

pub mod checkpoint;
mod config;
mod dataset;
mod objective;
mod optim;
pub mod run_log;
mod schedule;
mod setup;
mod trainer;

pub use config::{FinalPrompt, FormatConfig, TrainConfig, TrainingConfig, LOSS_METRIC};
pub use dataset::{DatasetConfig, Splits};
pub use objective::{choice_loss, encode_items, ChoiceExample, Examples, Objective};
pub use optim::{AdamW, AdamWConfig};
pub use schedule::{ScheduleConfig, ScheduleKind};
pub use setup::initial_prompt;
pub use trainer::{resume_config, train, TrainOptions, TrainReport, CONFIG_FILE};
