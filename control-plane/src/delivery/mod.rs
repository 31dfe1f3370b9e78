//! The durable delivery queue: every message a notification turns into, one
//! per channel and recipient, from the moment it is accepted until the
//! provider took it (or it failed for good).
//!
//! # Layout
//!
//! | module | what it does |
//! |---|---|
//! | [`model`] | [`Delivery`], its [`Status`] lifecycle (sent → delivered → opened/read → clicked), [`Engagement`] and attempt log |
//! | [`retry`] | [`RetryPolicy`]: backoff schedule as data, and the retry [`Decision`] |
//! | [`queue`] | [`DeliveryQueue`]: the lifecycle rules over the deliveries table, claims, crash recovery, wake-ups |
//! | [`facts`] | [`DeliveryFact`]: what analytics counts, written with each change in the queue's transaction |
//! | [`dispatcher`] | [`Dispatcher`]: per-channel worker loops that send and record outcomes |
//! | [`clock`] | [`Clock`]: system time in production, a manual clock in tests |
//! | [`metrics`] | [`DeliveryMetrics`]: the Prometheus handles the dispatcher updates |
//!
//! Promises, kept by [`queue`]: an enqueued delivery is on disk before
//! `enqueue` returns; no two workers ever hold the same delivery; a crash
//! never loses a delivery, it only causes a resend (at-least-once, so
//! receivers dedupe by delivery id, which [`crate::channels::OutboundMessage`]
//! carries as `delivery_id`).

pub mod clock;
pub mod dispatcher;
pub mod facts;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod retry;

#[cfg(test)]
mod tests;

pub use clock::{Clock, ManualClock, SystemClock};
pub use dispatcher::{Dispatcher, DispatcherConfig, InvalidRecipientHook, SendCheck, SendVerdict};
pub use facts::{DeliveryFact, FactKind};
pub use metrics::DeliveryMetrics;
pub use model::{
    Attempt, AttemptOutcome, Delivery, Engagement, NewDelivery, Priority, Status, StepGate,
};
pub use queue::{CLAIM_LEASE, Completion, DeliveryQueue, QueueError};
pub use retry::{Decision, RetryPolicy};
