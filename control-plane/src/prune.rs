//! The background task that keeps the dedupe window bounded: once an hour (and
//! once at start-up) it forgets ids ingested before now minus the dedupe
//! window. A failed pass is logged and retried next hour; it never stops the
//! server. Cancelled with the rest of the process.

use std::time::Duration;

use jiff::Timestamp;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::storage::{EventStore, StorageError};

/// How often a pass runs; the window is days, so an hour late costs little.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Runs passes until `stop` is cancelled.
pub async fn run(store: EventStore, window: Duration, metrics: Metrics, stop: CancellationToken) {
    let mut interval = tokio::time::interval(PRUNE_EVERY);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let cutoff = cutoff(Timestamp::now(), window);
        // Not raced with `stop`: a pass deletes in short chunks, and the
        // store must not be closed under it.
        let pass = async {
            let removed = store.prune_dedupe(cutoff).await?;
            Ok::<_, StorageError>((
                removed,
                store.event_count().await?,
                store.dedupe_count().await?,
            ))
        };
        match pass.await {
            Ok((removed, events, dedupe)) => {
                metrics.set_store_sizes(events, dedupe);
                tracing::info!(removed, remaining = dedupe, %cutoff, "dedupe pruned");
            }
            Err(error) => tracing::warn!(%error, "dedupe prune failed; retrying next pass"),
        }
    }
}

/// The oldest ingest time still inside the window.
pub fn cutoff(now: Timestamp, window: Duration) -> Timestamp {
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    Timestamp::from_millisecond(now.as_millisecond().saturating_sub(window_ms))
        .unwrap_or(Timestamp::MIN)
}
