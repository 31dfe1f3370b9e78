//! `nudge.v1.Ingest/Push`: converts a batch, stores it, and answers only
//! after the store made it durable, so the agent may delete it.
//!
//! Invalid envelopes are listed in the answer instead of failing the batch;
//! a store failure fails the whole call as UNAVAILABLE and nothing of it is
//! acknowledged (what did get stored is absorbed by dedupe on the resend).

use std::time::Instant;

use jiff::Timestamp;
use nudge_proto::v1::{PushRequest, PushResponse, ingest_server::Ingest};
use tonic::{Request, Response, Status};

use super::ServiceError;
use super::convert;
use crate::event::IngestOutcome;
use crate::metrics::Metrics;
use crate::storage::EventStore;

/// The Ingest service over the [`EventStore`].
pub struct IngestService {
    store: EventStore,
    metrics: Metrics,
}

impl IngestService {
    pub fn new(store: EventStore, metrics: Metrics) -> Self {
        IngestService { store, metrics }
    }

    async fn store(
        &self,
        events: Vec<crate::event::Event>,
    ) -> Result<(IngestOutcome, u64, u64), ServiceError> {
        let outcome = self.store.ingest(events).await?;
        Ok((
            outcome,
            self.store.event_count().await?,
            self.store.dedupe_count().await?,
        ))
    }
}

#[tonic::async_trait]
impl Ingest for IngestService {
    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushResponse>, Status> {
        let started = Instant::now();
        let received_at = Timestamp::now();
        let request = request.into_inner();
        let envelopes = request.envelopes.len();
        let (events, rejected) =
            convert::events_from_envelopes(&request.agent_id, request.envelopes, received_at);
        for reject in &rejected {
            tracing::warn!(agent_id = %request.agent_id, envelope_id = %reject.id, reason = %reject.reason, "envelope rejected");
        }
        let (outcome, stored_events, dedupe_entries) = match self.store(events).await {
            Ok(result) => result,
            Err(error) => {
                tracing::error!(agent_id = %request.agent_id, batch_id = %request.batch_id, %error, "push failed");
                return Err(error.into());
            }
        };
        self.metrics
            .events_ingested
            .inc_by(u64::from(outcome.stored));
        self.metrics
            .events_duplicate
            .inc_by(u64::from(outcome.duplicates));
        self.metrics
            .events_rejected
            .inc_by((rejected.len() + outcome.rejected.len()) as u64);
        self.metrics.events_erased.inc_by(u64::from(outcome.erased));
        self.metrics.ingest_batches.inc();
        self.metrics.set_store_sizes(stored_events, dedupe_entries);
        self.metrics
            .ingest_duration
            .observe(started.elapsed().as_secs_f64());
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
