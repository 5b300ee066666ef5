//! Evaluation: zero-shot against tuned prompts on Russian SuperGLUE. So far the official metrics; the
//! perplexity-based classifier, task adapters and report come next.

pub mod metrics;
mod score;

pub use score::{score_naive, score_shared, Candidate, Scored};
