//! Group commit: one task writes everything appended since its last pass
//! as one sled record (one per 8 KiB of calls) and flushes once, so
//! concurrent requests share one write and one flush.
//!
//! An append queues its records in the layout's `pending` group (under the
//! layout lock, microseconds), wakes this task and waits on a oneshot for
//! its group's outcome. This task takes the whole pending group, writes it
//! into the active segment and flushes (on the blocking pool: sled blocks
//! on the disk), then answers every waiter of that group: `Ok` only once
//! the flush succeeded. While it writes, new appends queue the next group,
//! so the group size follows the load.
//!
//! The write and flush happen under the outbox's `writing` lock, so the
//! segment they go to cannot be sealed or deleted meanwhile; rotation to a
//! new segment happens here too, right after a flush, when the active
//! segment has taken `segment_max_bytes`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Durability, Outbox, Pending};

/// Pause after a failed write before trying again, so a failing disk does
/// not turn into a busy loop.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Runs until `stop` is cancelled, then writes and flushes what is left.
/// Stop it only after intake has stopped, or appends would wait for a
/// flush that never comes (they fail with a storage error instead).
pub async fn run_flusher(outbox: Outbox, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = outbox.inner.flush_wanted.notified() => {}
            () = stop.cancelled() => break,
        }
        let worker = outbox.clone();
        let started = Instant::now();
        let written = tokio::task::spawn_blocking(move || worker.commit_pending()).await;
        match written {
            Ok(Some(Ok(()))) => {
                outbox
                    .inner
                    .metrics
                    .flush_duration
                    .observe(started.elapsed().as_secs_f64());
                outbox.inner.data_ready.notify_one();
            }
            Ok(None) => {}
            Ok(Some(Err(_))) => tokio::time::sleep(RETRY_PAUSE).await,
            Err(join_error) => {
                // The group's waiters were dropped with the panicking
                // closure: they answer "flusher stopped", nothing is acked.
                tracing::error!(%join_error, "outbox flush task panicked");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
    // Whatever is still queued gets a final write (or a clear failure), and
    // every segment its final flush (deletes included).
    let worker = outbox.clone();
    let _ = tokio::task::spawn_blocking(move || {
        worker.commit_pending();
        if let Err(error) = worker.flush() {
            tracing::error!(%error, "final outbox flush failed");
        }
    })
    .await;
}

impl Outbox {
    /// Writes the pending group as one record and (in fsync mode) flushes,
    /// then answers its waiters. `None` when nothing was pending. Blocking.
    fn commit_pending(&self) -> Option<Result<(), String>> {
        let inner = &self.inner;
        let _writing = inner
            .writing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (group, active, last) = {
            let mut layout = self.layout();
            if layout.pending.records.is_empty() {
                return None;
            }
            if layout.active.is_broken() {
                // Until a new segment can be created (disk full), the
                // group fails below without touching the broken one.
                if let Err(error) = self.replace_broken_active(&mut layout) {
                    tracing::debug!(%error, "broken outbox segment not replaced yet");
                }
            }
            let group = std::mem::take(&mut layout.pending);
            let last = layout.next_seq - 1;
            (group, Arc::clone(&layout.active), last)
        };
        let Pending {
            first_seq,
            records,
            waiters,
        } = group;
        let fsync = inner.config.durability == Durability::Fsync;
        let outcome = if active.is_broken() {
            Err(WriteFailure::NotWritten(
                "the outbox segment is broken and no new one can be created (disk full?)".into(),
            ))
        } else {
            active
                .insert_group(first_seq, &records)
                .map_err(|e| WriteFailure::NotWritten(e.to_string()))
                .and_then(|()| {
                    if fsync {
                        active
                            .flush()
                            .map_err(|e| WriteFailure::NotFlushed(e.to_string()))
                    } else {
                        Ok(())
                    }
                })
        };
        let result = match outcome {
            Ok(()) => {
                if fsync {
                    inner.metrics.flush_batch_size.observe(records.len() as f64);
                }
                inner.durable_seq.fetch_max(last, Ordering::AcqRel);
                if active.written_bytes() >= inner.config.segment_max_bytes {
                    let mut layout = self.layout();
                    if Arc::ptr_eq(&layout.active, &active)
                        && let Err(error) = self.rotate(&mut layout)
                    {
                        tracing::warn!(%error, "could not rotate the outbox segment");
                    }
                }
                Ok(())
            }
            Err(failure) => {
                let reason = failure.reason().to_owned();
                tracing::error!(reason, through = last, "outbox write failed");
                if let WriteFailure::NotWritten(_) = failure {
                    // Never in sled: no longer waiting to be shipped either.
                    let bytes: u64 = records.iter().map(|r| r.len() as u64).sum();
                    inner
                        .events
                        .fetch_sub(records.len() as u64, Ordering::AcqRel);
                    inner.bytes.fetch_sub(bytes, Ordering::AcqRel);
                }
                // Written but not flushed: the segment is broken, and its
                // records are counted again from disk once it is sealed
                // and reopened (see `Sealed::open`).
                Err(reason)
            }
        };
        for waiter in waiters {
            // A waiter that gave up (its request was dropped) is fine.
            let _ = waiter.send(result.clone());
        }
        self.publish_gauges();
        Some(result)
    }
}

/// How a group commit failed: whether its records are in sled at all.
enum WriteFailure {
    NotWritten(String),
    NotFlushed(String),
}

impl WriteFailure {
    fn reason(&self) -> &str {
        match self {
            WriteFailure::NotWritten(reason) | WriteFailure::NotFlushed(reason) => reason,
        }
    }
}
