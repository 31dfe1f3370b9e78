//! The analytics rollups' Prometheus metrics: engagement, outcomes and
//! cost as counters (so Grafana can rate them), and how far the rollups
//! are behind. Labels are bounded: channel (7), provider (one per
//! channel), kind (3), source (2), attributed (2); never users or types.

use prometheus::{CounterVec, IntCounterVec, IntGauge, Opts, Registry};

/// Clones share the same series.
#[derive(Clone)]
pub struct AnalyticsMetrics {
    /// `nudge_cp_delivery_engagement_total{channel, kind}`: first opens,
    /// reads and clicks of deliveries (each delivery counts once per kind).
    pub engagement: IntCounterVec,
    /// `nudge_cp_outcomes_total{channel, attributed}`: outcome events;
    /// `channel` is the attributed notification's, or `none`.
    pub outcomes: IntCounterVec,
    /// `nudge_cp_outcome_amount_total{channel}`: their amounts, in the
    /// configured currency.
    pub outcome_amount: CounterVec,
    /// `nudge_cp_delivery_cost_total{channel, provider}`: the cost of sent
    /// messages, in the configured currency.
    pub cost: CounterVec,
    /// `nudge_cp_analytics_applied_total{source}`: events and delivery
    /// facts folded into the rollups.
    pub applied: IntCounterVec,
    /// `nudge_cp_analytics_backlog`: events ingested but not yet in the
    /// rollups, as of the last pass (the rollups' lag).
    pub backlog: IntGauge,
}

impl AnalyticsMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        Ok(AnalyticsMetrics {
            engagement: IntCounterVec::new(
                Opts::new(
                    "nudge_cp_delivery_engagement_total",
                    "First opens, reads and clicks of deliveries.",
                ),
                &["channel", "kind"],
            )?,
            outcomes: IntCounterVec::new(
                Opts::new(
                    "nudge_cp_outcomes_total",
                    "Financial outcome events, by the attributed notification's channel.",
                ),
                &["channel", "attributed"],
            )?,
            outcome_amount: CounterVec::new(
                Opts::new(
                    "nudge_cp_outcome_amount_total",
                    "Amounts of outcome events, in the configured currency.",
                ),
                &["channel"],
            )?,
            cost: CounterVec::new(
                Opts::new(
                    "nudge_cp_delivery_cost_total",
                    "Cost of sent messages, in the configured currency.",
                ),
                &["channel", "provider"],
            )?,
            applied: IntCounterVec::new(
                Opts::new(
                    "nudge_cp_analytics_applied_total",
                    "Events and delivery facts folded into the analytics rollups.",
                ),
                &["source"],
            )?,
            backlog: IntGauge::new(
                "nudge_cp_analytics_backlog",
                "Events stored but not yet folded into the analytics rollups.",
            )?,
        })
    }

    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.engagement.clone()))?;
        registry.register(Box::new(self.outcomes.clone()))?;
        registry.register(Box::new(self.outcome_amount.clone()))?;
        registry.register(Box::new(self.cost.clone()))?;
        registry.register(Box::new(self.applied.clone()))?;
        registry.register(Box::new(self.backlog.clone()))?;
        Ok(())
    }
}

/// Metric changes of one pass, applied only after the pass committed: a
/// failed pass is repeated whole, and counting its changes then would
/// count them twice while the rollups count them once.
#[derive(Default)]
pub struct PendingMetrics {
    changes: std::cell::RefCell<Vec<Change>>,
}

enum Change {
    Engagement {
        channel: &'static str,
        kind: &'static str,
    },
    Outcome {
        /// The attributed notification's channel, `None` unattributed.
        channel: Option<String>,
        amount: f64,
    },
    Cost {
        channel: &'static str,
        provider: &'static str,
        amount: f64,
    },
}

impl PendingMetrics {
    pub fn engagement(&self, channel: &'static str, kind: &'static str) {
        self.changes
            .borrow_mut()
            .push(Change::Engagement { channel, kind });
    }

    pub fn outcome(&self, channel: Option<&str>, amount: f64) {
        self.changes.borrow_mut().push(Change::Outcome {
            channel: channel.map(str::to_owned),
            amount,
        });
    }

    pub fn cost(&self, channel: &'static str, provider: &'static str, amount: f64) {
        self.changes.borrow_mut().push(Change::Cost {
            channel,
            provider,
            amount,
        });
    }

    /// Counts every change (after the commit).
    pub fn apply(self, metrics: &AnalyticsMetrics) {
        for change in self.changes.into_inner() {
            match change {
                Change::Engagement { channel, kind } => {
                    metrics.engagement.with_label_values(&[channel, kind]).inc();
                }
                Change::Outcome { channel, amount } => {
                    let attributed = if channel.is_some() { "true" } else { "false" };
                    let channel = channel.as_deref().unwrap_or("none");
                    metrics
                        .outcomes
                        .with_label_values(&[channel, attributed])
                        .inc();
                    // Counters only go up: a negative amount (a refund
                    // reported as an outcome) is in the rollups, not here.
                    metrics
                        .outcome_amount
                        .with_label_values(&[channel])
                        .inc_by(amount.max(0.0));
                }
                Change::Cost {
                    channel,
                    provider,
                    amount,
                } => metrics
                    .cost
                    .with_label_values(&[channel, provider])
                    .inc_by(amount.max(0.0)),
            }
        }
    }
}
