//! The shipper: moves batches from the outbox to the control plane.
//!
//! # Promises
//!
//! * A record leaves the outbox only after the control plane acknowledged
//!   the batch carrying it (stored, duplicate, or refused for good), or when
//!   it cannot be decoded (then it is quarantined, not dropped).
//! * Batches are bounded by count and bytes, and a partial batch waits at
//!   most `linger` for company. Up to `in_flight` batches are pushed at
//!   once; the next window is read only after all of them settled, so no
//!   record is ever in two pushes at the same time.
//! * Retriable failures (control plane down, overloaded, timed out) back off
//!   exponentially with full jitter, honouring the control plane's hint.
//! * A refused credential (UNAUTHENTICATED: wrong or missing agent token or
//!   client certificate) is never the batch's fault: the batch stays in the
//!   outbox and is retried on the same backoff, each refusal is logged as
//!   an ERROR, counted as `nudge_agent_ship_failures_total{kind="unauthenticated"}`,
//!   and `nudge_agent_control_plane_unauthenticated` stays 1 until a push
//!   is accepted again.
//! * One bad batch never stalls the pipeline for good: when the control
//!   plane refuses a whole batch as invalid, the shipper halves the batch
//!   until it isolates the record that is refused, and quarantines that one.
//!
//! The shipper knows nothing of gRPC: it talks to a [`Transport`], which
//! `crate::grpc` implements with tonic for one control-plane replica, and
//! [`replicas`] for several (spread and failover, one [`Transport`] too).

pub mod backoff;
pub mod replicas;

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::outbox::{Batch, Outbox, Record};
use backoff::Backoff;

#[derive(Debug, Clone)]
pub struct ShipperConfig {
    pub agent_id: String,
    /// Batches pushed concurrently: the control plane's round trip (its
    /// flush) would otherwise bound throughput.
    pub in_flight: usize,
    pub max_events: usize,
    pub max_bytes: usize,
    pub linger: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub timeout: Duration,
}

/// What the control plane answered for a batch it acknowledged.
#[derive(Debug, Default)]
pub struct PushOutcome {
    /// Records stored or recognised as duplicates.
    pub accepted: usize,
    /// Records refused for good, with the control plane's reason.
    pub refused: Vec<(u64, String)>,
    /// Records this agent could not decode (never sent), with the reason.
    pub undecodable: Vec<(u64, String)>,
}

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// Worth retrying as is: the control plane is down, busy or slow, or
    /// refuses this agent for now (auth is a configuration problem, not the
    /// batch's). `retry_after` is the control plane's hint, if any.
    #[error("retriable: {message}")]
    Retriable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The batch itself is refused (invalid, too large): resending it as is
    /// would fail again.
    #[error("batch refused: {message}")]
    BatchRefused { message: String },
    /// The control plane refuses this agent's credentials (agent token or
    /// client certificate). A configuration problem, not the batch's: it
    /// stays in the outbox and is retried until someone fixes the setting.
    #[error("unauthenticated: {message}")]
    Unauthenticated { message: String },
}

/// Sends one batch of outbox records to the control plane.
pub trait Transport: Send + Sync + 'static {
    fn push(
        &self,
        agent_id: &str,
        records: &[Record],
    ) -> impl Future<Output = Result<PushOutcome, ShipError>> + Send;
}

/// Runs until the outbox is empty after `draining` is cancelled, or until
/// `stop` is cancelled (the shutdown grace period ran out).
pub async fn run_shipper<T: Transport>(
    outbox: Outbox,
    transport: T,
    config: ShipperConfig,
    metrics: Metrics,
    draining: CancellationToken,
    stop: CancellationToken,
) {
    let mut shipper = Shipper {
        backoff: Backoff::new(config.retry_initial, config.retry_max),
        batch_limit: config.max_events,
        outbox,
        transport,
        config,
        metrics,
    };
    shipper.run(&draining, &stop).await;
}

struct Shipper<T> {
    outbox: Outbox,
    transport: T,
    config: ShipperConfig,
    metrics: Metrics,
    backoff: Backoff,
    /// Current most events per batch: `max_events`, or less while isolating
    /// a record the control plane refuses.
    batch_limit: usize,
}

/// How long to sleep when waiting for data without a wake-up, as a safety
/// net against a missed notification.
const IDLE_POLL: Duration = Duration::from_secs(1);

impl<T: Transport> Shipper<T> {
    async fn run(&mut self, draining: &CancellationToken, stop: &CancellationToken) {
        let mut lingered = false;
        loop {
            if stop.is_cancelled() {
                return;
            }
            let window_events = self.batch_limit * self.config.in_flight;
            let window_bytes = self.config.max_bytes * self.config.in_flight;
            let batch = match self.outbox.next_batch(window_events, window_bytes) {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::error!(%error, "reading the outbox failed");
                    let delay = self.backoff.next_delay(None);
                    self.pause(delay, stop).await;
                    continue;
                }
            };
            let Some(batch) = batch else {
                if draining.is_cancelled() {
                    return;
                }
                tokio::select! {
                    () = self.outbox.data_ready() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                    () = draining.cancelled() => {}
                    () = stop.cancelled() => return,
                }
                continue;
            };
            let partial = batch.records.len() < self.batch_limit
                && batch.encoded_bytes() < self.config.max_bytes;
            if partial && !lingered && !draining.is_cancelled() && !self.config.linger.is_zero() {
                lingered = true;
                self.pause(self.config.linger, stop).await;
                continue;
            }
            lingered = false;
            self.ship(batch, stop).await;
        }
    }

    /// Ships a window of records as up to `in_flight` concurrent pushes and
    /// settles each: acknowledged batches are removed even when a sibling
    /// failed (that one is read again after the backoff).
    async fn ship(&mut self, window: Batch, stop: &CancellationToken) {
        let batches = split(window, self.batch_limit, self.config.max_bytes);
        let started = Instant::now();
        let pushes = batches
            .iter()
            .map(|batch| self.transport.push(&self.config.agent_id, &batch.records));
        let results = tokio::select! {
            results = futures::future::join_all(pushes) => results,
            () = stop.cancelled() => return,
        };
        let elapsed = started.elapsed().as_secs_f64();
        let mut retry_hint: Option<Option<Duration>> = None;
        for (batch, result) in batches.iter().zip(results) {
            self.metrics.ship_duration.observe(elapsed);
            match result {
                Ok(outcome) => {
                    self.metrics.control_plane_unauthenticated.set(0);
                    self.settle(batch, &outcome);
                }
                Err(ShipError::Unauthenticated { message }) => {
                    self.metrics
                        .ship_failures
                        .with_label_values(&["unauthenticated"])
                        .inc();
                    self.metrics.control_plane_unauthenticated.set(1);
                    tracing::error!(
                        error = %message,
                        events = batch.records.len(),
                        "the control plane refused this agent's credentials; the events stay in the outbox and are retried: check NUDGE_AGENT_CONTROL_PLANE_TOKEN (or _FILE) or the client certificate against the control plane's NUDGE_CP_AGENT_TOKENS / NUDGE_CP_TLS_CLIENT_CA"
                    );
                    retry_hint = Some(retry_hint.flatten());
                }
                Err(ShipError::Retriable {
                    message,
                    retry_after,
                }) => {
                    self.metrics
                        .ship_failures
                        .with_label_values(&["retriable"])
                        .inc();
                    tracing::warn!(error = %message, events = batch.records.len(), "shipping failed; will retry");
                    retry_hint = Some(retry_hint.flatten().max(retry_after));
                }
                Err(ShipError::BatchRefused { message }) => {
                    self.metrics
                        .ship_failures
                        .with_label_values(&["permanent"])
                        .inc();
                    self.isolate(batch, &message);
                }
            }
        }
        if let Some(hint) = retry_hint {
            let delay = self.backoff.next_delay(hint);
            tracing::info!(failures = self.backoff.failures(), retry_in = ?delay, "backing off");
            self.pause(delay, stop).await;
        }
    }

    /// The control plane refused a whole batch as invalid: quarantine it if
    /// it is a single record, else halve the batch size so the next attempts
    /// narrow down the record at fault.
    fn isolate(&mut self, batch: &Batch, message: &str) {
        if let [record] = batch.records.as_slice() {
            let reason = format!("refused by the control plane: {message}");
            if let Err(error) = self.outbox.quarantine(batch.segment_id, record, &reason) {
                // It stays in the outbox and is retried with the next window.
                tracing::error!(%error, "could not quarantine a refused record");
            }
            return;
        }
        self.batch_limit = (batch.records.len() / 2).max(1);
        tracing::warn!(
            error = message,
            events = batch.records.len(),
            next_batch = self.batch_limit,
            "control plane refused a batch; halving it to isolate the bad record"
        );
    }

    /// Removes what the control plane acknowledged and quarantines what
    /// could not be decoded.
    fn settle(&mut self, batch: &Batch, outcome: &PushOutcome) {
        self.backoff.reset();
        // A successful batch lets the limit grow back after isolating a bad
        // record, so throughput recovers.
        self.batch_limit = (self.batch_limit * 2).min(self.config.max_events);
        let mut delivered: Vec<Record> = Vec::with_capacity(batch.records.len());
        for record in &batch.records {
            if let Some((_, reason)) = outcome
                .undecodable
                .iter()
                .find(|(seq, _)| *seq == record.seq)
            {
                if let Err(error) = self.outbox.quarantine(batch.segment_id, record, reason) {
                    tracing::error!(%error, seq = record.seq, "could not quarantine a record");
                }
            } else {
                delivered.push(record.clone());
            }
        }
        for (seq, reason) in &outcome.refused {
            tracing::warn!(seq, reason, "control plane refused an event for good");
        }
        if let Err(error) = self.outbox.remove(batch.segment_id, &delivered) {
            // The records stay and are shipped again; dedupe absorbs them.
            tracing::error!(%error, "could not delete acknowledged records");
            return;
        }
        self.metrics.events_shipped.inc_by(outcome.accepted as u64);
        self.metrics
            .events_rejected_by_control_plane
            .inc_by(outcome.refused.len() as u64);
    }

    async fn pause(&self, delay: Duration, stop: &CancellationToken) {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => {}
        }
    }
}

/// Cuts a window of records into batches of at most `max_events` records
/// and `max_bytes` bytes (a single larger record makes a batch of its own).
fn split(window: Batch, max_events: usize, max_bytes: usize) -> Vec<Batch> {
    let mut batches: Vec<Batch> = Vec::new();
    let mut bytes = 0;
    for record in window.records {
        let full = batches.last().is_none_or(|batch| {
            batch.records.len() >= max_events || bytes + record.bytes.len() > max_bytes
        });
        if full {
            batches.push(Batch {
                segment_id: window.segment_id,
                records: Vec::new(),
            });
            bytes = 0;
        }
        bytes += record.bytes.len();
        batches
            .last_mut()
            .expect("a batch was just pushed if none was open")
            .records
            .push(record);
    }
    batches
}

#[cfg(test)]
mod tests;
