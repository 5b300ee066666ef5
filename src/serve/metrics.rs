//! `GET /metrics`: what the server did, in the Prometheus (OpenMetrics) text format.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The server's metrics; clones share them.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Answered requests by route and status.
    pub requests: Family<Vec<(String, String)>, Counter>,
    pub prompt_tokens: Counter,
    pub completion_tokens: Counter,
    /// Rows decoded per step.
    pub batch_rows: Histogram,
    /// Jobs waiting for room in the batch.
    pub queue_length: Gauge,
    /// Seconds each job waited for room in the batch.
    pub queue_wait: Histogram,
    pub running_rows: Gauge,
    /// Seconds from a completion request to its last byte.
    pub latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<Vec<(String, String)>, Counter>::default();
        let (prompt_tokens, completion_tokens) = (Counter::default(), Counter::default());
        let batch_rows = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        let (queue_length, running_rows) = (Gauge::default(), Gauge::default());
        let latency = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let queue_wait = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let mut registry = Registry::with_prefix("ruprompts");
        registry.register("requests", "HTTP requests answered, by route and status", requests.clone());
        registry.register("prompt_tokens", "Prompt tokens read", prompt_tokens.clone());
        registry.register("completion_tokens", "Tokens generated", completion_tokens.clone());
        registry.register("batch_rows", "Rows decoded per step", batch_rows.clone());
        registry.register("queue_length", "Jobs (prompts) waiting for room in the batch", queue_length.clone());
        registry.register("queue_wait_seconds", "Seconds each job waited for room in the batch", queue_wait.clone());
        registry.register("running_rows", "Rows in the running batch", running_rows.clone());
        registry.register(
            "request_duration_seconds",
            "Completion requests from arrival to the last byte",
            latency.clone(),
        );
        Self {
            registry: Arc::new(registry),
            requests,
            prompt_tokens,
            completion_tokens,
            batch_rows,
            queue_length,
            queue_wait,
            running_rows,
            latency,
        }
    }
}

impl Metrics {
    /// Counts an answered request.
    pub fn answered(&self, route: &str, status: u16) {
        self.requests.get_or_create(&vec![("route".into(), route.into()), ("status".into(), status.to_string())]).inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
