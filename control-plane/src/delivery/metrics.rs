//! The delivery queue's Prometheus metrics. Labels are bounded: channel
//! (7 values), outcome (6) and status (3); never user or delivery ids.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::model::Status;
use crate::channels::ChannelKind;

/// Handles the dispatcher updates. Clones share the same series.
#[derive(Clone)]
pub struct DeliveryMetrics {
    /// `nudge_cp_deliveries_total{channel, outcome}`: one per attempt outcome:
    /// `sent`, `retry`, `failed`, `invalid_recipient`, `dead_lettered`, and
    /// `cancelled` (a workflow step the user's engagement made needless).
    pub deliveries: IntCounterVec,
    /// `nudge_cp_delivery_attempts_total{channel}`: provider calls made.
    pub attempts: IntCounterVec,
    /// `nudge_cp_delivery_latency_seconds{channel}`: from first due (after any
    /// quiet-hours hold) to accepted by the provider, retries included.
    pub latency: HistogramVec,
    /// `nudge_cp_dead_letters_total{channel}`.
    pub dead_letters: IntCounterVec,
    /// `nudge_cp_delivery_queue_depth{channel, status}` for queued, sending
    /// and dead-lettered deliveries.
    pub queue_depth: IntGaugeVec,
    /// `nudge_cp_delivery_claims_total{channel}`: deliveries this replica
    /// claimed to send (replicas share the queue: each counts its own).
    pub claims: IntCounterVec,
}

impl DeliveryMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        Ok(DeliveryMetrics {
            deliveries: IntCounterVec::new(
                Opts::new("nudge_cp_deliveries_total", "Delivery attempt outcomes."),
                &["channel", "outcome"],
            )?,
            attempts: IntCounterVec::new(
                Opts::new("nudge_cp_delivery_attempts_total", "Provider calls made."),
                &["channel"],
            )?,
            latency: HistogramVec::new(
                HistogramOpts::new(
                    "nudge_cp_delivery_latency_seconds",
                    "Time from due to accepted by the provider.",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0, 900.0, 3600.0, 21600.0,
                ]),
                &["channel"],
            )?,
            dead_letters: IntCounterVec::new(
                Opts::new("nudge_cp_dead_letters_total", "Deliveries dead-lettered."),
                &["channel"],
            )?,
            queue_depth: IntGaugeVec::new(
                Opts::new(
                    "nudge_cp_delivery_queue_depth",
                    "Deliveries in the queue by channel and status.",
                ),
                &["channel", "status"],
            )?,
            claims: IntCounterVec::new(
                Opts::new(
                    "nudge_cp_delivery_claims_total",
                    "Deliveries this replica claimed for sending.",
                ),
                &["channel"],
            )?,
        })
    }

    /// Adds every metric to `registry` (the control plane's one registry).
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.deliveries.clone()))?;
        registry.register(Box::new(self.attempts.clone()))?;
        registry.register(Box::new(self.latency.clone()))?;
        registry.register(Box::new(self.dead_letters.clone()))?;
        registry.register(Box::new(self.queue_depth.clone()))?;
        registry.register(Box::new(self.claims.clone()))?;
        Ok(())
    }

    pub fn set_depths<'a>(
        &self,
        depths: impl IntoIterator<Item = (&'a (ChannelKind, Status), &'a u64)>,
    ) {
        for ((channel, status), count) in depths {
            self.queue_depth
                .with_label_values(&[channel.as_str(), status.as_str()])
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
    }
}
