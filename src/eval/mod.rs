//! Evaluation: zero-shot against k-shot and tuned prompts on the nine Russian SuperGLUE tasks, task files and
//! text-to-text tasks: runs cached and sharded over ranks, bootstrap statistics, and the report that puts the
//! settings side by side. The tasks and the scorer they use are in [`crate::task`].

mod evaluate;
mod generation;
pub mod overlap;
mod run;
pub mod stats;

pub use crate::report::{
    MetricRow, ModeScore, Report, SettingResult, Spread, TaskResult, REPORT_JSON, REPORT_MD, REPORT_SVG,
};
pub use evaluate::{evaluate, write_submission, EvalRequest, FewShot};
pub use generation::{evaluate_generation, GenerationRequest, PREDICTIONS_FILE};
pub use run::{across_ranks, fingerprint, Shard};
