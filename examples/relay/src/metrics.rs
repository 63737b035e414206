//! Prometheus metrics, served at `GET /metrics` in the text format.
//!
//! One registry per [`crate::Relay`] (not a process-wide recorder), so tests
//! that run several relays in one process each read their own figures.
//! Counters and histograms are updated where things happen (ingest,
//! delivery); the gauges that describe stored state (deliveries by status,
//! the oldest pending delivery, the in-memory backlog) are read at scrape time.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Hook {
    pub webhook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookOutcome {
    pub webhook: String,
    /// `delivered`, `retry`, `failed` or `dead`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

fn seconds_histogram() -> Histogram {
    // 1 ms to about 65 s: a local receiver answers in a millisecond, a sick one times out.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

pub struct Metrics {
    registry: Registry,
    pub events_accepted: Counter,
    pub events_duplicate: Counter,
    pub batches_rejected: Family<Reason, Counter>,
    pub ingest_bytes: Counter,
    pub attempts: Family<HookOutcome, Counter>,
    pub attempt_seconds: Family<Hook, Histogram, fn() -> Histogram>,
    pub event_to_webhook_seconds: Family<Hook, Histogram, fn() -> Histogram>,
    pub backlog: Gauge,
    pub deliveries: Family<StatusLabel, Gauge>,
    pub oldest_pending_seconds: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cuecast");
        let m = Metrics {
            events_accepted: Counter::default(),
            events_duplicate: Counter::default(),
            batches_rejected: Family::default(),
            ingest_bytes: Counter::default(),
            attempts: Family::default(),
            attempt_seconds: Family::new_with_constructor(seconds_histogram),
            event_to_webhook_seconds: Family::new_with_constructor(seconds_histogram),
            backlog: Gauge::default(),
            deliveries: Family::default(),
            oldest_pending_seconds: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("events_accepted", "Events stored (new ids)", m.events_accepted.clone());
        registry.register("events_duplicate", "Events whose id was stored before", m.events_duplicate.clone());
        registry.register("batches_rejected", "Batches refused, by error code", m.batches_rejected.clone());
        registry.register("ingest_bytes", "Batch body bytes received (after gzip)", m.ingest_bytes.clone());
        registry.register("attempts", "Delivery attempts by webhook and outcome", m.attempts.clone());
        registry.register("attempt_seconds", "Duration of a delivery attempt", m.attempt_seconds.clone());
        registry.register(
            "event_to_webhook_seconds",
            "From an event's acceptance to its delivery (2xx)",
            m.event_to_webhook_seconds.clone(),
        );
        registry.register(
            "backlog",
            "Deliveries this relay holds that are due (queued or in flight)",
            m.backlog.clone(),
        );
        registry.register("deliveries", "Stored deliveries by status (dead = dead letters)", m.deliveries.clone());
        registry.register(
            "oldest_pending_seconds",
            "Age of the oldest pending delivery (0 when none)",
            m.oldest_pending_seconds.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    pub fn attempt(&self, webhook: &str, outcome: &str, seconds: f64) {
        let hook = Hook { webhook: webhook.to_string() };
        self.attempts.get_or_create(&HookOutcome { webhook: webhook.to_string(), outcome: outcome.to_string() }).inc();
        self.attempt_seconds.get_or_create(&hook).observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format_with_labels() {
        let m = Metrics::default();
        m.events_accepted.inc_by(3);
        m.batches_rejected.get_or_create(&Reason { reason: "invalid_event".into() }).inc();
        m.attempt("crm", "delivered", 0.004);
        let text = m.render();
        assert!(text.contains("cuecast_events_accepted_total 3"), "{text}");
        assert!(text.contains("cuecast_batches_rejected_total{reason=\"invalid_event\"} 1"), "{text}");
        assert!(text.contains("cuecast_attempts_total{webhook=\"crm\",outcome=\"delivered\"} 1"), "{text}");
        assert!(text.contains("cuecast_attempt_seconds_bucket{le=\"0.008\",webhook=\"crm\"} 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
