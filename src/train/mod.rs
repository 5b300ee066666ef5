//! Prompt tuning: the optimizer, the learning-rate schedule and the training loop.

mod optim;
mod schedule;

pub use optim::{clip_grad_norm, AdamW, AdamWConfig};
pub use schedule::{ScheduleConfig, ScheduleKind};
