//! Group commit: one task flushes the active segment for every append that
//! is waiting, so concurrent requests share one fsync.
//!
//! An append inserts its records (under the layout lock, which also
//! publishes `written_seq`), wakes this task and waits until `durable_seq`
//! covers its last sequence number. This task reads `written_seq`, flushes,
//! then publishes it as durable: every record up to it was inserted before
//! the flush began, so it is on disk.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{FlushStatus, Outbox};

/// Pause after a failed flush before trying again, so a failing disk does
/// not turn into a busy loop.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Runs until `stop` is cancelled, then flushes once more. Stop it only
/// after intake has stopped, or appends would wait for a flush that never
/// comes (they fail with a storage error instead of hanging).
pub async fn run_flusher(outbox: Outbox, stop: CancellationToken) {
    let inner = &outbox.inner;
    loop {
        tokio::select! {
            () = inner.flush_wanted.notified() => {}
            () = stop.cancelled() => break,
        }
        let durable = inner.flush_status.borrow().durable_seq;
        let (target, active) = {
            let layout = outbox.layout();
            (
                inner.written_seq.load(Ordering::Acquire),
                Arc::clone(&layout.active),
            )
        };
        if target <= durable {
            continue;
        }
        let started = Instant::now();
        let flushed = tokio::task::spawn_blocking(move || active.flush()).await;
        inner
            .metrics
            .flush_duration
            .observe(started.elapsed().as_secs_f64());
        match flushed {
            Ok(Ok(())) => {
                inner
                    .metrics
                    .flush_batch_size
                    .observe((target - durable) as f64);
                inner.flush_status.send_modify(|status| {
                    status.durable_seq = status.durable_seq.max(target);
                });
                inner.data_ready.notify_one();
            }
            Ok(Err(error)) => {
                tracing::error!(%error, through = target, "outbox flush failed");
                fail_through(&outbox, target);
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(join_error) => {
                tracing::error!(%join_error, "outbox flush task panicked");
                fail_through(&outbox, target);
            }
        }
    }
    // Whatever is still waiting gets a final flush (or a clear failure).
    let target = inner.written_seq.load(Ordering::Acquire);
    match outbox.flush() {
        Ok(()) => inner.flush_status.send_modify(|status: &mut FlushStatus| {
            status.durable_seq = status.durable_seq.max(target);
        }),
        Err(error) => {
            tracing::error!(%error, "final outbox flush failed");
            fail_through(&outbox, target);
        }
    }
}

fn fail_through(outbox: &Outbox, target: u64) {
    outbox.inner.flush_status.send_modify(|status| {
        status.failed_through = status.failed_through.max(target);
    });
}
