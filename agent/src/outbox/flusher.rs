//! Group commit: one thread writes everything appended since its last pass
//! as one sled record (one per 8 KiB of calls) and flushes once, so
//! concurrent requests share one write and one flush.
//!
//! An append queues its records in the layout's `pending` group (under the
//! layout lock, microseconds), wakes this thread if it sleeps and waits on
//! a oneshot for its group's outcome. This thread takes the whole pending
//! group, writes it into the active segment and flushes, then answers every
//! waiter of that group: `Ok` only once the flush succeeded. While it
//! writes, new appends queue the next group, so the group size follows the
//! load.
//!
//! It is a thread of its own, not a task handing each flush to tokio's
//! blocking pool: sled blocks on the disk anyway, and every hand-over
//! (request task → flusher task → blocking thread) was a wake-up and a
//! context switch in each group commit's latency (issue 14, third pass).
//! Appends wake it only when it sleeps, so a busy agent pays no wake-up
//! per call.
//!
//! The write and flush happen under the outbox's `writing` lock, so the
//! segment they go to cannot be sealed or deleted meanwhile; rotation to a
//! new segment happens here too, right after a flush, when the active
//! segment has taken `segment_max_bytes`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Durability, Outbox, Pending};

/// Pause after a failed write before trying again, so a failing disk does
/// not turn into a busy loop.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// In unsafe-ack mode nobody waits for a group commit, so the thread lets
/// calls gather this long between commits. Committing every call as soon
/// as it came made groups of one or two, and the thread's inserts then
/// competed with intake for the CPU and the layout lock (slower by a
/// quarter in the benchmark). Records wait in memory either way until
/// sled's periodic flush.
const UNSAFE_GATHER: Duration = Duration::from_millis(1);

/// Runs the flusher thread until `stop` is cancelled (or this future is
/// dropped), then lets it write and flush what is left. Stop it only after
/// intake has stopped, or appends would wait for a flush that never comes
/// (they fail with a storage error instead).
pub async fn run_flusher(outbox: Outbox, stop: CancellationToken) {
    let worker = outbox.clone();
    let thread = std::thread::Builder::new()
        .name("outbox-flusher".into())
        .spawn(move || worker.flusher_loop());
    let thread = match thread {
        Ok(thread) => thread,
        Err(error) => {
            // Appends then fail with "outbox flusher stopped": refused,
            // never acknowledged.
            tracing::error!(%error, "could not start the outbox flusher thread");
            outbox.layout().flusher.stopping = true;
            return;
        }
    };
    let stopper = StopOnDrop(outbox);
    stop.cancelled().await;
    drop(stopper);
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
}

/// Tells the flusher thread to finish, also when `run_flusher` is dropped
/// (a runtime shutting down), so the thread never outlives its owner.
struct StopOnDrop(Outbox);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.layout().flusher.stopping = true;
        self.0.inner.flush_wanted.notify_one();
    }
}

/// The flusher thread's side of the layout: whether it sleeps (so an
/// append must wake it) and whether it should finish.
#[derive(Default)]
pub(super) struct FlusherState {
    pub(super) sleeping: bool,
    /// Set once: appends are refused from then on.
    pub(super) stopping: bool,
}

impl Outbox {
    /// The flusher thread: waits for pending appends, commits them, and
    /// on stop commits what is left and flushes every segment.
    fn flusher_loop(&self) {
        loop {
            {
                let mut layout = self.layout();
                while layout.pending.records.is_empty() && !layout.flusher.stopping {
                    layout.flusher.sleeping = true;
                    layout = self
                        .inner
                        .flush_wanted
                        .wait(layout)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                }
                layout.flusher.sleeping = false;
                if layout.flusher.stopping {
                    break;
                }
            }
            let started = Instant::now();
            match catch_unwind(AssertUnwindSafe(|| self.commit_pending())) {
                Ok(Some(Ok(()))) => {
                    self.inner
                        .metrics
                        .flush_duration
                        .observe(started.elapsed().as_secs_f64());
                    self.inner.data_ready.notify_one();
                    if self.inner.config.durability == Durability::UnsafeAckBeforeFlush {
                        std::thread::sleep(UNSAFE_GATHER);
                    }
                }
                Ok(None) => {}
                Ok(Some(Err(_))) => std::thread::sleep(RETRY_PAUSE),
                Err(_) => {
                    // The group's waiters were dropped while unwinding:
                    // they answer "flusher stopped", nothing is acked.
                    tracing::error!("outbox group commit panicked");
                    std::thread::sleep(RETRY_PAUSE);
                }
            }
        }
        // Whatever is still queued gets a final write (or a clear
        // failure), and every segment its final flush (deletes included).
        self.commit_pending();
        if let Err(error) = self.flush() {
            tracing::error!(%error, "final outbox flush failed");
        }
    }

    /// Writes the pending group as one record and (in fsync mode) flushes,
    /// then answers its waiters. `None` when nothing was pending. Blocking:
    /// only the flusher thread calls it.
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
