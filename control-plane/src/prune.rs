//! The background task that keeps the dedupe tree bounded: once an hour (and
//! once at start-up) it forgets ids ingested before now minus the dedupe
//! window. A failed pass is logged and retried next hour; it never stops the
//! server. Cancelled with the rest of the process.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// How often a pass runs; the window is days, so an hour late costs little.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Runs passes until `stop` is cancelled.
pub async fn run(
    store: Arc<dyn Store>,
    window: Duration,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let mut interval = tokio::time::interval(PRUNE_EVERY);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let cutoff = cutoff(Timestamp::now(), window);
        let pass_store = Arc::clone(&store);
        let pass = tokio::task::spawn_blocking(move || {
            let removed = pass_store.prune_dedupe(cutoff)?;
            Ok::<_, StoreError>((
                removed,
                pass_store.event_count()?,
                pass_store.dedupe_count()?,
            ))
        });
        // Awaited even during shutdown: the pass holds the store, which must
        // be closed (and flushed) before `run` returns.
        match pass.await {
            Ok(Ok((removed, events, dedupe))) => {
                metrics.set_store_sizes(events, dedupe);
                tracing::info!(removed, remaining = dedupe, %cutoff, "dedupe pruned");
            }
            Ok(Err(error)) => tracing::warn!(%error, "dedupe prune failed; retrying next pass"),
            Err(error) => tracing::warn!(%error, "dedupe prune task failed; retrying next pass"),
        }
    }
}

/// The oldest ingest time still inside the window.
pub fn cutoff(now: Timestamp, window: Duration) -> Timestamp {
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    Timestamp::from_millisecond(now.as_millisecond().saturating_sub(window_ms))
        .unwrap_or(Timestamp::MIN)
}
