//! What the server is told at start: where it listens, what it holds open and queues, and what one request may
//! ask for.

use std::net::IpAddr;

use super::engine::Limits;
use super::listen::Connections;

/// Where to listen and what a request may ask for.
#[derive(Debug, Clone)]
pub struct Options {
    pub host: IpAddr,
    pub port: u16,
    /// When set, every route but /health wants `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    pub limits: Limits,
    /// The most sequences one request may ask for (`n`).
    pub max_n: usize,
    /// The largest request body, in bytes (413 past it).
    pub max_body_bytes: usize,
    /// The most alternatives per token `logprobs` may ask for.
    pub max_logprobs: usize,
    pub connections: Connections,
}
