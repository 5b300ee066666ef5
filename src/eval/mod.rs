//! Evaluation: zero-shot against tuned prompts on the nine Russian SuperGLUE tasks. Candidate answers are scored
//! by the frozen LM (naively or from a shared context's KV cache), the best one is the prediction, the official
//! metrics and submission files come from the task adapters, and the report puts the settings side by side.

mod choose;
mod classify;
mod evaluate;
pub mod fewshot;
mod formats;
mod generation;
pub mod metrics;
pub mod overlap;
mod run;
mod score;
pub mod stats;
mod taskfile;
mod tasks;

pub use crate::report::{
    MetricRow, ModeScore, Report, SettingResult, Spread, TaskResult, REPORT_JSON, REPORT_MD, REPORT_SVG,
};
pub use choose::{best, candidate_score, ScoreMode};
pub use classify::{Classifier, Item, ItemScores, Request, Shot};
pub use evaluate::{evaluate, write_submission, EvalRequest, FewShot};
pub use formats::TaskFormats;
pub use formats::Templates;
pub use generation::{evaluate_generation, GenerationRequest, PREDICTIONS_FILE};
pub use run::{across_ranks, fingerprint, Shard};
pub use score::{answer_logprob_sums, score_naive, score_shared, score_shared_many, shared_batches, Candidate, Scored};
pub use taskfile::{CandidatesSpec, EvalTask, GoldSpec, TaskFile, TaskMetric};
pub use tasks::{label_key, Metric, RsgTask, TaskItem};
