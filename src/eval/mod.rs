//! Evaluation: zero-shot against tuned prompts on Russian SuperGLUE. So far: the official metrics, continuation
//! scoring (naive and shared-context) and the scoring modes; task adapters and the report come next.

mod choose;
mod classify;
pub mod metrics;
mod score;

pub use choose::{best, candidate_score, ScoreMode};
pub use classify::{Classifier, Item, ANSWER_FIELD};
pub use score::{score_naive, score_shared, Candidate, Scored};
