//! `nudge.v1.Ingest/Push`: converts a batch, stores it, and answers only
//! after the store made it durable, so the agent may delete it.
//!
//! Invalid envelopes are listed in the answer instead of failing the batch;
//! a store failure fails the whole call as UNAVAILABLE and nothing of it is
//! acknowledged (what did get stored is absorbed by dedupe on the resend).
//!
//! The ingest metrics count exactly what the store did, even when the agent
//! disconnects mid-push: the store write and the metric updates run in one
//! spawned task, which is not dropped with the request's future.

use std::time::Instant;

use jiff::Timestamp;
use nudge_proto::v1::{PushRequest, PushResponse, ingest_server::Ingest};
use tonic::{Request, Response, Status};

use super::ServiceError;
use super::convert;
use super::warn_throttle::{WARN_INTERVAL, WarnThrottle};
use crate::event::{Event, IngestOutcome, Rejected};
use crate::metrics::Metrics;
use crate::storage::{EventStore, StorageError};

/// The Ingest service over the [`EventStore`].
pub struct IngestService {
    store: EventStore,
    metrics: Metrics,
}

impl IngestService {
    pub fn new(store: EventStore, metrics: Metrics) -> Self {
        IngestService { store, metrics }
    }
}

/// Stores a batch and counts it. The two happen in one spawned task on
/// purpose: it runs to completion even when the agent disconnects and the
/// request's future is dropped mid-push, so the metrics count exactly what
/// the store holds (they used to be updated after an `.await` that a
/// disconnect cancelled, undercounting the store across agent SIGKILLs).
async fn store_and_count(
    store: EventStore,
    metrics: Metrics,
    events: Vec<Event>,
    conversion_rejects: usize,
    started: Instant,
) -> Result<IngestOutcome, StorageError> {
    let outcome = store.ingest(events).await?;
    metrics.events_ingested.inc_by(u64::from(outcome.stored));
    metrics
        .events_duplicate
        .inc_by(u64::from(outcome.duplicates));
    metrics
        .events_rejected
        .inc_by((conversion_rejects + outcome.rejected.len()) as u64);
    metrics.events_erased.inc_by(u64::from(outcome.erased));
    metrics.ingest_batches.inc();
    metrics
        .ingest_duration
        .observe(started.elapsed().as_secs_f64());
    // Sizes are gauges: a failure to read them only leaves them stale.
    if let (Ok(events), Ok(dedupe)) = (store.event_count().await, store.dedupe_count().await) {
        metrics.set_store_sizes(events, dedupe);
    }
    Ok(outcome)
}

/// Converts a batch, splitting it into storable events and rejects (in
/// envelope order). Each envelope passes nudge-proto's shared check first:
/// the very rule the agent applies at intake, so the agent never
/// acknowledges what is refused here.
fn checked_events(
    agent_id: &str,
    envelopes: Vec<nudge_proto::v1::Envelope>,
    received_at: Timestamp,
) -> (Vec<Event>, Vec<Rejected>) {
    let mut events = Vec::with_capacity(envelopes.len());
    let mut rejected = Vec::new();
    for envelope in envelopes {
        let checked =
            nudge_proto::validate::check_envelope(&envelope).map_err(|invalid| invalid.to_string());
        let id = envelope.id.clone();
        match checked.and_then(|()| convert::event_from_envelope(agent_id, envelope, received_at)) {
            Ok(event) => events.push(event),
            Err(reason) => rejected.push(Rejected { id, reason }),
        }
    }
    (events, rejected)
}

#[tonic::async_trait]
impl Ingest for IngestService {
    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushResponse>, Status> {
        let started = Instant::now();
        let received_at = Timestamp::now();
        let request = request.into_inner();
        let envelopes = request.envelopes.len();
        let (events, rejected) = checked_events(&request.agent_id, request.envelopes, received_at);
        if let Some(first) = rejected.first() {
            // Agents check envelopes with the same rule before they
            // acknowledge them, so a reject means an old or broken agent;
            // but one batch can hold thousands. One line a minute, naming
            // the first of its batch; every reject at debug level; the
            // metric counts them all.
            static REJECTED: WarnThrottle = WarnThrottle::new(WARN_INTERVAL);
            if let Some(left_out) = REJECTED.admit(Instant::now()) {
                tracing::warn!(
                    agent_id = %request.agent_id,
                    rejected = rejected.len(),
                    envelope_id = %first.id,
                    reason = %first.reason,
                    batches_with_rejects_not_logged = left_out,
                    "envelopes rejected"
                );
            }
            for reject in &rejected {
                tracing::debug!(agent_id = %request.agent_id, envelope_id = %reject.id, reason = %reject.reason, "envelope rejected");
            }
        }
        let task = tokio::spawn(store_and_count(
            self.store.clone(),
            self.metrics.clone(),
            events,
            rejected.len(),
            started,
        ));
        let stored = match task.await {
            Ok(stored) => stored.map_err(ServiceError::from),
            Err(join_error) => Err(ServiceError::from(join_error)),
        };
        let outcome = match stored {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::error!(agent_id = %request.agent_id, batch_id = %request.batch_id, %error, "push failed");
                return Err(error.into());
            }
        };
        tracing::debug!(
            agent_id = %request.agent_id,
            batch_id = %request.batch_id,
            envelopes,
            stored = outcome.stored,
            duplicates = outcome.duplicates,
            erased = outcome.erased,
            "batch ingested"
        );
        Ok(Response::new(convert::push_response(
            request.batch_id,
            outcome,
            rejected,
            received_at,
        )))
    }
}
