//! Tasks and the scorer, the building blocks that evaluation, training and serving share: what an item is (the
//! nine Russian SuperGLUE tasks, a user's task file), its formats and verbalizers, demonstrations, the candidate
//! answers scored by the frozen LM (naively or from a shared context's KV cache), the prediction and the official
//! metrics. Evaluation runs (`eval`) and training's objectives (`train`) sit above it.

mod choose;
mod classify;
pub mod fewshot;
mod formats;
pub mod metrics;
mod score;
mod taskfile;
mod tasks;

pub use choose::{best, candidate_score, ScoreMode};
pub use classify::{Classifier, Item, ItemScores, Request, Shot};
pub use formats::{TaskFormats, Templates};
pub use score::{answer_logprob_sums, score_naive, score_shared, score_shared_many, shared_batches, Candidate, Scored};
pub use taskfile::{CandidatesSpec, EvalTask, GoldSpec, TaskFile, TaskMetric};
pub use tasks::{label_key, Metric, RsgTask, TaskItem};
