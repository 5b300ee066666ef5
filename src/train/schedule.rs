//! Learning-rate schedules with Hugging Face's formulas (`get_constant_schedule_with_warmup`,
//! `get_linear_schedule_with_warmup`, `get_cosine_schedule_with_warmup`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    #[default]
    Constant,
    Linear,
    Cosine,
}

/// The `scheduler` section of a config.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    #[serde(default)]
    pub kind: ScheduleKind,
    /// Steps of linear warm-up from 0 to the base learning rate.
    #[serde(default)]
    pub warmup_steps: usize,
}

impl ScheduleConfig {
    /// The multiplier of the base learning rate at optimizer step `step` (0-based) of `total`.
    pub fn factor(&self, step: usize, total: usize) -> f64 {
        let (step, warmup, total) = (step as f64, self.warmup_steps as f64, total as f64);
        if step < warmup {
            return step / warmup.max(1.0);
        }
        let progress = (step - warmup) / (total - warmup).max(1.0);
        match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Linear => ((total - step) / (total - warmup).max(1.0)).max(0.0),
            ScheduleKind::Cosine => (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_follow_hugging_face() {
        let linear = ScheduleConfig { kind: ScheduleKind::Linear, warmup_steps: 10 };
        assert_eq!([0, 5, 10, 55, 100, 120].map(|s| linear.factor(s, 100)), [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]);
        let cosine = ScheduleConfig { kind: ScheduleKind::Cosine, warmup_steps: 0 };
        assert_eq!(cosine.factor(0, 100), 1.0);
        assert!((cosine.factor(50, 100) - 0.5).abs() < 1e-12);
        assert!(cosine.factor(100, 100).abs() < 1e-12);
        let constant = ScheduleConfig { kind: ScheduleKind::Constant, warmup_steps: 4 };
        assert_eq!([0, 2, 4, 1000].map(|s| constant.factor(s, 10)), [0.0, 0.5, 1.0, 1.0]);
    }
}
