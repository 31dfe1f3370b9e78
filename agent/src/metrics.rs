//! The agent's Prometheus metrics, in one registry served on the admin port.
//!
//! Names are a contract (dashboards and alerts rely on them). Label values
//! come from small fixed sets: never a user id, write key or event name.

use std::ops::Deref;
use std::sync::Arc;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Every metric the agent exports, behind one `Arc`: the intake state that
/// axum clones for every request holds it, so a clone is one reference
/// count, not one per metric handle (two dozen atomic operations a call,
/// ~2 % of the agent's CPU under load before; `perf record`).
#[derive(Clone)]
pub struct Metrics(Arc<MetricSet>);

/// The metric handles themselves; reached through [`Metrics`]' `Deref`.
pub struct MetricSet {
    pub registry: Registry,
    /// Envelopes accepted and made durable (one per Segment call or batch item).
    pub events_received: IntCounter,
    /// Envelopes the control plane acknowledged (stored or duplicate).
    pub events_shipped: IntCounter,
    /// Envelopes the control plane refused for good (dropped from the outbox).
    pub events_rejected_by_control_plane: IntCounter,
    /// Envelopes waiting in the outbox.
    pub outbox_events: IntGauge,
    /// Bytes of encoded envelopes waiting in the outbox (what the quota counts).
    pub outbox_bytes: IntGauge,
    /// Bytes the outbox's sled segments take on disk.
    pub outbox_disk_bytes: IntGauge,
    /// Outbox segments (sled databases) on disk.
    pub outbox_segments: IntGauge,
    /// Records moved aside because they could not be read or decoded.
    pub outbox_quarantined: IntCounter,
    /// Segments that sled could not open at start-up, moved aside whole.
    pub outbox_segments_quarantined: IntCounter,
    /// HTTP requests refused, by reason (a fixed set, see `RejectReason`).
    pub requests_rejected: IntCounterVec,
    /// Wall time of one `Ingest.Push` call, including failed ones.
    pub ship_duration: Histogram,
    /// `Ingest.Push` calls that failed, by kind (`retriable`, `permanent`,
    /// `unauthenticated`).
    pub ship_failures: IntCounterVec,
    /// 1 while the control plane refuses this agent's credentials (the last
    /// push answered UNAUTHENTICATED), 0 once a push is accepted.
    pub control_plane_unauthenticated: IntGauge,
    /// Wall time of one group-commit flush of the outbox.
    pub flush_duration: Histogram,
    /// Envelopes per group-commit flush (how well concurrent calls share a flush).
    pub flush_batch_size: Histogram,
    /// Intake latency by route template, method and status
    /// (`http::request_metrics`).
    pub http_request_duration: prometheus::HistogramVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let counter_vec = |name: &str, help: &str, label: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let latency_buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        Self(Arc::new(MetricSet {
            events_received: counter(
                "nudge_agent_events_received_total",
                "Envelopes accepted over HTTP and made durable in the outbox.",
            ),
            events_shipped: counter(
                "nudge_agent_events_shipped_total",
                "Envelopes acknowledged by the control plane and deleted from the outbox.",
            ),
            events_rejected_by_control_plane: counter(
                "nudge_agent_events_refused_total",
                "Envelopes the control plane refused for good; deleted without resending.",
            ),
            outbox_events: gauge(
                "nudge_agent_outbox_events",
                "Envelopes waiting in the outbox.",
            ),
            outbox_bytes: gauge(
                "nudge_agent_outbox_bytes",
                "Encoded bytes of the envelopes waiting in the outbox (counted against the quota).",
            ),
            outbox_disk_bytes: gauge(
                "nudge_agent_outbox_disk_bytes",
                "Bytes the outbox's sled segments occupy on disk.",
            ),
            outbox_segments: gauge(
                "nudge_agent_outbox_segments",
                "Outbox segments (sled databases) on disk.",
            ),
            outbox_quarantined: counter(
                "nudge_agent_outbox_quarantined_total",
                "Outbox records moved to quarantine because they could not be read or decoded.",
            ),
            outbox_segments_quarantined: counter(
                "nudge_agent_outbox_segments_quarantined_total",
                "Outbox segments that could not be opened at start-up and were moved to quarantine.",
            ),
            requests_rejected: counter_vec(
                "nudge_agent_requests_rejected_total",
                "HTTP intake requests refused, by reason.",
                "reason",
            ),
            ship_duration: histogram(
                "nudge_agent_ship_duration_seconds",
                "Duration of one Ingest.Push call to the control plane.",
                latency_buckets.clone(),
            ),
            ship_failures: counter_vec(
                "nudge_agent_ship_failures_total",
                "Ingest.Push calls that failed, by kind (retriable, permanent, or unauthenticated: the control plane refused this agent's token or certificate and the events stay in the outbox).",
                "kind",
            ),
            control_plane_unauthenticated: gauge(
                "nudge_agent_control_plane_unauthenticated",
                "1 while the control plane refuses this agent's credentials (UNAUTHENTICATED: agent token or client certificate); events wait in the outbox. 0 once a push is accepted.",
            ),
            flush_duration: histogram(
                "nudge_agent_outbox_flush_duration_seconds",
                "Duration of one group-commit flush (fsync) of the outbox.",
                latency_buckets,
            ),
            flush_batch_size: histogram(
                "nudge_agent_outbox_flush_envelopes",
                "Envelopes made durable by one group-commit flush.",
                vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                ],
            ),
            http_request_duration: {
                let h = crate::http::request_metrics::histogram().expect("valid metric");
                registry
                    .register(Box::new(h.clone()))
                    .expect("unique metric");
                h
            },
            registry,
        }))
    }

    /// The text exposition of every metric, for `/metrics`.
    pub fn render(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .expect("text encoding of gathered metrics cannot fail")
    }
}

impl Deref for Metrics {
    type Target = MetricSet;

    fn deref(&self) -> &MetricSet {
        &self.0
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
