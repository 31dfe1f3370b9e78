//! Prometheus metrics of the control plane, in one registry of our own (not
//! the process-global default, so tests can run several instances in one
//! process). Served by `admin` at `/metrics`.
//!
//! Labels never carry user or event ids: every series here is bounded.

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntGauge, Registry, TextEncoder};

/// Every metric the control plane exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Events newly stored (resends excluded), to see real traffic.
    pub events_ingested: IntCounter,
    /// Events absorbed by dedupe: a high rate means agents resend a lot.
    pub events_duplicate: IntCounter,
    /// Envelopes refused as invalid; each one is a client or agent bug.
    pub events_rejected: IntCounter,
    /// Events of erased users, acknowledged and dropped (`store`'s tombstones).
    pub events_erased: IntCounter,
    /// Push calls handled successfully.
    pub ingest_batches: IntCounter,
    /// Push latency including the flush, which is what agents wait for.
    pub ingest_duration: Histogram,
    /// Events in the store, for capacity planning.
    pub stored_events: IntGauge,
    /// Ids in the dedupe window; should plateau once the window is full.
    pub dedupe_entries: IntGauge,
    /// HTTP API latency by route template (`http::request_metrics`).
    pub http_request_duration: prometheus::HistogramVec,
    /// gRPC latency by service, method and code (`grpc::request_metrics`).
    pub grpc_request_duration: prometheus::HistogramVec,
}

impl Metrics {
    /// The registry, for metrics that other modules define next to the code
    /// they measure (e.g. the delivery queue's).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let events_ingested = IntCounter::new(
            "nudge_cp_events_ingested_total",
            "Events newly stored by gRPC Push (duplicates excluded).",
        )?;
        let events_duplicate = IntCounter::new(
            "nudge_cp_events_duplicate_total",
            "Events received again whose id was already stored (absorbed by dedupe).",
        )?;
        let events_rejected = IntCounter::new(
            "nudge_cp_events_rejected_total",
            "Envelopes rejected as invalid and never stored.",
        )?;
        let events_erased = IntCounter::new(
            "nudge_cp_events_erased_total",
            "Events of erased users, acknowledged to the agent and not stored.",
        )?;
        let ingest_batches = IntCounter::new(
            "nudge_cp_ingest_batches_total",
            "gRPC Push calls that stored their batch.",
        )?;
        let ingest_duration = Histogram::with_opts(
            HistogramOpts::new(
                "nudge_cp_ingest_duration_seconds",
                "Time to handle a gRPC Push, including the durable flush.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let stored_events =
            IntGauge::new("nudge_cp_stored_events", "Events currently in the store.")?;
        let dedupe_entries = IntGauge::new(
            "nudge_cp_dedupe_entries",
            "Event ids currently remembered by the dedupe window.",
        )?;
        registry.register(Box::new(events_ingested.clone()))?;
        registry.register(Box::new(events_duplicate.clone()))?;
        registry.register(Box::new(events_rejected.clone()))?;
        registry.register(Box::new(events_erased.clone()))?;
        registry.register(Box::new(ingest_batches.clone()))?;
        registry.register(Box::new(ingest_duration.clone()))?;
        registry.register(Box::new(stored_events.clone()))?;
        registry.register(Box::new(dedupe_entries.clone()))?;
        let http_request_duration = crate::http::request_metrics::histogram()?;
        registry.register(Box::new(http_request_duration.clone()))?;
        let grpc_request_duration = crate::grpc::request_metrics::histogram()?;
        registry.register(Box::new(grpc_request_duration.clone()))?;
        Ok(Metrics {
            registry,
            events_ingested,
            events_duplicate,
            events_rejected,
            events_erased,
            ingest_batches,
            ingest_duration,
            stored_events,
            dedupe_entries,
            http_request_duration,
            grpc_request_duration,
        })
    }

    /// Sets the store gauges from the store's own counters.
    pub fn set_store_sizes(&self, events: u64, dedupe: u64) {
        self.stored_events
            .set(i64::try_from(events).unwrap_or(i64::MAX));
        self.dedupe_entries
            .set(i64::try_from(dedupe).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|error| prometheus::Error::Msg(error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_with_help() {
        let metrics = Metrics::new().unwrap();
        metrics.events_ingested.inc();
        let text = metrics.render().unwrap();
        for name in [
            "nudge_cp_events_ingested_total",
            "nudge_cp_events_duplicate_total",
            "nudge_cp_events_rejected_total",
            "nudge_cp_events_erased_total",
            "nudge_cp_ingest_batches_total",
            "nudge_cp_ingest_duration_seconds",
            "nudge_cp_stored_events",
            "nudge_cp_dedupe_entries",
        ] {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no help for {name}:\n{text}"
            );
        }
    }
}
