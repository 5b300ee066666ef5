//! `ruprompts serve`: one frozen model and many tuned prompts behind an OpenAI-compatible HTTP API. Requests for
//! any prompt (or none) decode together in one continuously refilled batch; the answers are what each request
//! gets alone.

mod answer;
mod api;
mod auth;
mod check;
mod engine;
mod http;
mod inputs;
mod listen;
mod metrics;
mod options;

pub use engine::Limits;
pub use http::{serve, Served};
pub use listen::Connections;
pub use options::Options;
