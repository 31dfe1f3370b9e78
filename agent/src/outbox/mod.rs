//! The durable outbox: every accepted call waits here until the control plane
//! has acknowledged it.
//!
//! # Invariants
//!
//! 1. **Ack only after fsync.** [`Outbox::append`] returns `Ok` only once its
//!    records are flushed to disk (in [`Durability::Fsync`], the default).
//!    Concurrent appends share one flush (group commit, see [`flusher`]),
//!    and few sled records: appends only queue their records in memory,
//!    and the flusher writes everything queued as one record per 8 KiB and
//!    flushes once, then answers each waiting append.
//! 2. **Delete only after the control plane's ack.** Records leave the outbox
//!    through [`Outbox::remove`], which the shipper calls after `Ingest.Push`
//!    acknowledged them, or through [`Outbox::quarantine`]. Deletes are not
//!    flushed eagerly: if they are lost in a crash, the records are shipped
//!    again and the control plane's dedupe absorbs them.
//! 3. **Never a silent drop.** When the byte quota is full, `append` refuses
//!    with [`AppendError::QuotaFull`] and writes nothing.
//! 4. **Only acknowledged records are shipped.** The shipper reads up to the
//!    last flushed sequence number, so the control plane never sees a call
//!    whose client did not get (or will not get) a success answer. (With
//!    [`Durability::UnsafeAckBeforeFlush`], calls are acknowledged before
//!    the flush, so everything inserted may be shipped.)
//! 5. **A bad record never stops the agent.** A segment that sled cannot open
//!    is moved to `quarantine/` at start-up; a record that cannot be decoded is
//!    moved to the quarantine database by the shipper. Both are counted.
//! 6. **A disk fault refuses, it never acknowledges.** A failed insert or
//!    flush (a full disk, an I/O error) fails the appends waiting on it.
//!    sled 0.34 then fails every later write of that database, so the
//!    segment is marked broken and sealed as it is (what was acknowledged
//!    from it was flushed before), and a new segment takes appends as soon
//!    as one can be created, i.e. once the disk has room again. A sealed
//!    segment's records are counted anew from disk when it is opened. A
//!    refused call may still be shipped if its bytes did reach the disk (a
//!    5xx's outcome is unknown); the control plane's dedupe makes a retry
//!    with the same `messageId` harmless.
//! 7. **Rotation drops nothing.** The active segment is flushed before a new
//!    one replaces it; if the flush (or creating the new segment) fails, the
//!    old one stays active. Records acknowledged by the control plane are
//!    deleted from whichever segment holds them, a sealed and closed one
//!    included (it is opened again), so they never ship twice.
//!
//! # Why segments
//!
//! sled 0.34 does not give back disk space after insert-then-delete, which is
//! exactly an outbox's workload. So the outbox is a chain of *segments*, each
//! its own small sled database in `outbox/seg-<id>/`. New records go to the
//! active segment; once it has taken `segment_max_bytes` it is flushed,
//! sealed and closed (which also returns its page cache, keeping memory near
//! one segment's `cache_capacity` whatever the backlog). The shipper drains
//! segments oldest first and deletes a drained segment's directory, which is
//! the only reliable way to reclaim sled's space. A drained active segment
//! that has taken a fair amount of data is rotated too, so disk use returns
//! to its floor after a backlog.
//!
//! Keys are big-endian `u64` sequence numbers, global across segments, so a
//! segment's key order is arrival order and recovery finds the next number
//! from the newest key on disk.

mod flusher;
mod segment;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use std::sync::Condvar;
use tokio::sync::{Notify, oneshot};

use crate::metrics::Metrics;
pub use flusher::run_flusher;
use segment::Segment;

/// When `append` may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Answer after the records are flushed to disk (group commit). Default.
    Fsync,
    /// Answer as soon as the records are in sled's memory; sled's background
    /// flush (every `flush_every`) makes them durable. A crash can lose the
    /// last moments of acknowledged calls. Opt-in, for throughput over safety.
    UnsafeAckBeforeFlush,
}

/// How the outbox is laid out and bounded.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// The agent's data directory; the outbox lives in `outbox/` and
    /// `quarantine/` below it.
    pub data_dir: PathBuf,
    /// Quota on the encoded bytes of records waiting to be shipped.
    pub max_bytes: u64,
    /// Bytes a segment takes before it is sealed and a new one started.
    pub segment_max_bytes: u64,
    /// sled's page cache per open segment.
    pub cache_capacity: u64,
    pub durability: Durability,
    /// The hint given to clients refused for a full quota.
    pub retry_after: Duration,
    /// sled's background flush period.
    pub flush_every: Duration,
}

impl OutboxConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            max_bytes: 1 << 30,
            segment_max_bytes: 2 << 20,
            cache_capacity: 16 << 20,
            durability: Durability::Fsync,
            retry_after: Duration::from_secs(5),
            flush_every: Duration::from_millis(500),
        }
    }
}

/// Why an append was refused. Nothing was written when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The byte quota is full; the caller should answer 503 + Retry-After.
    #[error("outbox quota full ({used} of {quota} bytes used)")]
    QuotaFull {
        used: u64,
        quota: u64,
        retry_after: Duration,
    },
    /// The agent is shutting down and accepts no more calls.
    #[error("agent is shutting down")]
    ShuttingDown,
    /// sled failed; the call was not made durable.
    #[error("outbox storage error: {0}")]
    Storage(String),
}

/// A failure of the outbox itself (opening, reading, deleting).
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("outbox storage: {0}")]
    Sled(#[from] sled::Error),
}

/// What a successful append returns: the records are durable.
#[derive(Debug, Clone)]
pub struct AppendReceipt {
    /// Outbox sequence numbers assigned to the records, in order.
    pub seqs: Vec<u64>,
}

/// One stored record, as the shipper reads it.
#[derive(Debug, Clone)]
pub struct Record {
    pub seq: u64,
    pub bytes: Bytes,
}

/// Records read from one segment, oldest first.
#[derive(Debug, Clone)]
pub struct Batch {
    pub segment_id: u64,
    pub records: Vec<Record>,
}

impl Batch {
    pub fn encoded_bytes(&self) -> usize {
        self.records.iter().map(|r| r.bytes.len()).sum()
    }
}

/// Calls appended but not yet written to sled: the next group commit.
#[derive(Default)]
struct Pending {
    /// The sequence number of `records[0]`; the rest follow without gaps.
    first_seq: u64,
    records: Vec<Bytes>,
    /// One per append waiting for durability (fsync mode), told how its
    /// group commit fared: the exact answer for each caller, even when a
    /// later group succeeds after an earlier one failed.
    waiters: Vec<oneshot::Sender<Result<(), String>>>,
}

/// The segments, guarded by one mutex that is held only for in-memory work
/// and sled inserts (microseconds), never across a flush in the hot path.
struct Layout {
    /// The next sequence number to assign.
    next_seq: u64,
    /// Appended, not yet in sled; taken whole by the flusher.
    pending: Pending,
    /// Where appends go.
    active: Arc<Segment>,
    /// Sealed segments, oldest first. They are flushed and read-only.
    sealed: VecDeque<Sealed>,
    /// Whether the flusher thread sleeps or should stop.
    flusher: flusher::FlusherState,
}

/// A sealed segment: closed (its page cache returned) until the shipper
/// reaches it.
enum Sealed {
    /// `events` and `bytes` are what the outbox counts for it; when it is
    /// opened again its records are counted anew and the outbox's totals
    /// corrected (a segment sealed after a failed write may hold fewer
    /// records on disk than were inserted in memory).
    Closed {
        id: u64,
        path: PathBuf,
        events: u64,
        bytes: u64,
    },
    Open(Arc<Segment>),
}

impl Sealed {
    fn id(&self) -> u64 {
        match self {
            Sealed::Closed { id, .. } => *id,
            Sealed::Open(segment) => segment.id,
        }
    }

    /// The segment, opening it (and keeping it open) if it was closed.
    /// Corrects the outbox's totals by what the segment really holds.
    fn open(&mut self, inner: &Inner) -> Result<Arc<Segment>, OutboxError> {
        if let Sealed::Closed {
            id,
            path,
            events,
            bytes,
        } = self
        {
            let segment = Arc::new(Segment::open(*id, path, &inner.config)?);
            let (found_events, found_bytes) = segment.live();
            if (found_events, found_bytes) != (*events, *bytes) {
                tracing::warn!(
                    segment = *id,
                    counted = *events,
                    found = found_events,
                    "a sealed segment holds other records than counted (sealed after a failed write)"
                );
                inner.events.fetch_add(found_events, Ordering::AcqRel);
                inner.events.fetch_sub(*events, Ordering::AcqRel);
                inner.bytes.fetch_add(found_bytes, Ordering::AcqRel);
                inner.bytes.fetch_sub(*bytes, Ordering::AcqRel);
            }
            *self = Sealed::Open(segment);
        }
        match self {
            Sealed::Open(segment) => Ok(Arc::clone(segment)),
            Sealed::Closed { .. } => unreachable!("opened above"),
        }
    }
}

struct Inner {
    config: OutboxConfig,
    metrics: Metrics,
    layout: Mutex<Layout>,
    /// Highest sequence number appended (not necessarily in sled yet).
    written_seq: AtomicU64,
    /// Records and encoded bytes waiting, across all segments.
    events: AtomicU64,
    bytes: AtomicU64,
    /// Every record with a sequence number up to this one is on disk (or,
    /// in unsafe mode, in sled).
    durable_seq: AtomicU64,
    /// Wakes the flusher thread (with the layout lock): appends are
    /// queued, or it should stop.
    flush_wanted: Condvar,
    /// Held by whoever writes to (or replaces) the active segment outside
    /// the layout lock: the flusher while it writes and flushes a group,
    /// and rotations. So a segment is never sealed, or deleted as drained,
    /// under a group being written to it. Taken before the layout lock.
    writing: Mutex<()>,
    /// Wakes the shipper: new durable records.
    data_ready: Notify,
    accepting: AtomicBool,
    /// Opened on first use: a record that cannot be decoded is rare, and
    /// an open sled database costs a thread and about a MiB of memory.
    quarantine: Mutex<Option<sled::Db>>,
}

/// The outbox. Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

const SEGMENTS_DIR: &str = "outbox";
const QUARANTINE_DIR: &str = "quarantine";

impl Outbox {
    /// Opens (or creates) the outbox and recovers what a previous run left:
    /// every segment on disk becomes sealed and is shipped oldest first; a new
    /// active segment takes new appends. Blocking: call before serving.
    pub fn open(config: OutboxConfig, metrics: Metrics) -> Result<Self, OutboxError> {
        let segments_dir = config.data_dir.join(SEGMENTS_DIR);
        let quarantine_dir = config.data_dir.join(QUARANTINE_DIR);
        create_dir(&segments_dir)?;
        create_dir(&quarantine_dir)?;

        let mut sealed = VecDeque::new();
        let mut max_seq = 0;
        let mut max_id = 0;
        let (mut events, mut bytes) = (0, 0);
        for (id, path) in segment::list(&segments_dir)? {
            max_id = max_id.max(id);
            match Segment::recover(id, &path, &config) {
                Ok(recovered) => {
                    max_seq = max_seq.max(recovered.max_seq);
                    if recovered.events == 0 {
                        remove_dir(&path);
                        continue;
                    }
                    events += recovered.events;
                    bytes += recovered.bytes;
                    sealed.push_back(Sealed::Closed {
                        id,
                        path,
                        events: recovered.events,
                        bytes: recovered.bytes,
                    });
                }
                Err(reason) => {
                    let aside = quarantine_dir.join(format!("seg-{id:016x}-unreadable"));
                    tracing::error!(segment = id, %reason, to = %aside.display(), "outbox segment cannot be opened; moved to quarantine");
                    metrics.outbox_segments_quarantined.inc();
                    if let Err(error) = std::fs::rename(&path, &aside) {
                        // Left in place, it is skipped again at the next
                        // start: still no crash loop.
                        tracing::error!(%error, path = %path.display(), "could not move the unreadable segment aside");
                    }
                }
            }
        }
        let active = Arc::new(Segment::create(max_id + 1, &segments_dir, &config)?);
        if events > 0 {
            tracing::info!(
                events,
                bytes,
                segments = sealed.len(),
                "recovered outbox backlog"
            );
        }
        let inner = Inner {
            layout: Mutex::new(Layout {
                next_seq: max_seq + 1,
                pending: Pending::default(),
                active,
                sealed,
                flusher: flusher::FlusherState::default(),
            }),
            written_seq: AtomicU64::new(max_seq),
            events: AtomicU64::new(events),
            bytes: AtomicU64::new(bytes),
            durable_seq: AtomicU64::new(max_seq),
            flush_wanted: Condvar::new(),
            writing: Mutex::new(()),
            data_ready: Notify::new(),
            accepting: AtomicBool::new(true),
            quarantine: Mutex::new(None),
            config,
            metrics,
        };
        let outbox = Self {
            inner: Arc::new(inner),
        };
        outbox.publish_gauges();
        Ok(outbox)
    }

    /// Appends records atomically (all or none) and returns once they are
    /// durable on disk (group commit with concurrent callers). In unsafe
    /// mode it returns once they are queued for the flusher.
    pub async fn append(&self, records: Vec<Bytes>) -> Result<AppendReceipt, AppendError> {
        let inner = &self.inner;
        if !inner.accepting.load(Ordering::Acquire) {
            return Err(AppendError::ShuttingDown);
        }
        if records.is_empty() {
            return Ok(AppendReceipt { seqs: Vec::new() });
        }
        let incoming: u64 = records.iter().map(|r| r.len() as u64).sum();
        let fsync = inner.config.durability == Durability::Fsync;
        let (sender, receiver) = oneshot::channel();
        let wake_flusher;
        let seqs = {
            let mut layout = self.layout();
            if layout.flusher.stopping {
                return Err(AppendError::Storage("outbox flusher stopped".into()));
            }
            if layout.active.is_broken() {
                // Fail fast, writing nothing, while no new segment can be
                // created (disk full). `try_lock`: never wait for the
                // flusher under the layout lock (it takes `writing` first);
                // if it is busy, it replaces the segment itself.
                if let Ok(_writing) = inner.writing.try_lock() {
                    self.replace_broken_active(&mut layout)
                        .map_err(|e| AppendError::Storage(e.to_string()))?;
                }
            }
            let used = inner.bytes.load(Ordering::Acquire);
            if used + incoming > inner.config.max_bytes {
                return Err(AppendError::QuotaFull {
                    used,
                    quota: inner.config.max_bytes,
                    retry_after: inner.config.retry_after,
                });
            }
            let first = layout.next_seq;
            let seqs: Vec<u64> = (first..first + records.len() as u64).collect();
            wake_flusher = std::mem::take(&mut layout.flusher.sleeping);
            let pending = &mut layout.pending;
            if pending.records.is_empty() {
                pending.first_seq = first;
            }
            pending.records.extend(records);
            if fsync {
                pending.waiters.push(sender);
            }
            layout.next_seq += seqs.len() as u64;
            inner.events.fetch_add(seqs.len() as u64, Ordering::AcqRel);
            inner.bytes.fetch_add(incoming, Ordering::AcqRel);
            inner
                .written_seq
                .store(layout.next_seq - 1, Ordering::Release);
            seqs
        };
        self.publish_gauges();
        if wake_flusher {
            inner.flush_wanted.notify_one();
        }
        if !fsync {
            // Acknowledged before the write: the opt-in unsafe mode.
            return Ok(AppendReceipt { seqs });
        }
        match receiver.await {
            Ok(Ok(())) => Ok(AppendReceipt { seqs }),
            Ok(Err(reason)) => Err(AppendError::Storage(reason)),
            Err(_) => Err(AppendError::Storage("outbox flusher stopped".into())),
        }
    }

    /// Stops accepting appends (graceful shutdown). Already accepted records
    /// stay and are shipped or kept for the next start.
    pub fn stop_accepting(&self) {
        self.inner.accepting.store(false, Ordering::Release);
    }

    /// Reads up to `max_events` / `max_bytes` durable records from the
    /// oldest segment that has any (at least one record even if it alone is
    /// larger than `max_bytes`). `None` when nothing is waiting.
    pub fn next_batch(
        &self,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Option<Batch>, OutboxError> {
        let shippable_seq = match self.inner.config.durability {
            Durability::Fsync => self.inner.durable_seq.load(Ordering::Acquire),
            // Already acknowledged to the client, so already promised; what
            // is still queued is simply not in sled yet.
            Durability::UnsafeAckBeforeFlush => self.inner.written_seq.load(Ordering::Acquire),
        };
        loop {
            let (segment, bound) = {
                // Never waits for a group being written: a broken segment
                // is then replaced by the flusher or at the next read.
                let writing = self.inner.writing.try_lock().ok();
                let mut layout = self.layout();
                if writing.is_some() && layout.active.is_broken() {
                    // Its acknowledged records must not wait for the next
                    // append to seal it; while the disk is full this fails
                    // and the shipper reads what it can.
                    if let Err(error) = self.replace_broken_active(&mut layout) {
                        tracing::debug!(%error, "broken outbox segment not replaced yet");
                    }
                }
                // Opening a sealed segment below may take a while: the
                // flusher must not wait for it.
                drop(writing);
                // Sealed segments were flushed when sealed: all of them is durable.
                match layout.sealed.front_mut() {
                    Some(sealed) => (sealed.open(&self.inner)?, u64::MAX),
                    None => (Arc::clone(&layout.active), shippable_seq),
                }
            };
            let records = segment.read(bound, max_events, max_bytes)?;
            if !records.is_empty() {
                return Ok(Some(Batch {
                    segment_id: segment.id,
                    records,
                }));
            }
            // An empty sealed segment (e.g. its last records were
            // quarantined) is finished: drop it and look at the next one.
            if !self.retire_if_drained(segment.id) {
                return Ok(None);
            }
        }
    }

    /// Deletes records the control plane acknowledged. The segment they
    /// were read from may have been sealed and closed since (rotation while
    /// the batch was in flight); it is opened again, or its records would
    /// ship a second time.
    pub fn remove(&self, segment_id: u64, records: &[Record]) -> Result<(), OutboxError> {
        let (events, bytes) = {
            // The layout lock is held across the removal. A rotation seals
            // and closes a segment counting what it holds at that moment
            // (under this lock); removing through a handle taken before it
            // would delete records that count still includes, and they
            // would be subtracted twice (here and when the segment is
            // opened again), leaving the outbox's totals short for good.
            let mut layout = self.layout();
            let Some(segment) = Self::segment_in(&mut layout, segment_id, &self.inner)? else {
                // Already retired whole: nothing of it is left to delete.
                return Ok(());
            };
            segment.remove(records)?
        };
        self.inner.events.fetch_sub(events, Ordering::AcqRel);
        self.inner.bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.retire_if_drained(segment_id);
        self.publish_gauges();
        Ok(())
    }

    /// Moves a record that cannot be shipped (undecodable) to the quarantine
    /// database, where an operator can inspect it, and counts it.
    pub fn quarantine(
        &self,
        segment_id: u64,
        record: &Record,
        reason: &str,
    ) -> Result<(), OutboxError> {
        let mut key = record.seq.to_be_bytes().to_vec();
        key.extend_from_slice(reason.as_bytes());
        {
            let mut quarantine = self
                .inner
                .quarantine
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let database = match quarantine.as_ref() {
                Some(database) => database,
                None => quarantine.insert(
                    sled::Config::new()
                        .path(
                            self.inner
                                .config
                                .data_dir
                                .join(QUARANTINE_DIR)
                                .join("records"),
                        )
                        .cache_capacity(1 << 20)
                        .open()?,
                ),
            };
            database.insert(key, record.bytes.as_ref())?;
            database.flush()?;
        }
        self.inner.metrics.outbox_quarantined.inc();
        tracing::warn!(
            seq = record.seq,
            segment = segment_id,
            reason,
            "outbox record quarantined"
        );
        self.remove(segment_id, std::slice::from_ref(record))
    }

    /// Waits until new records may be ready to ship.
    pub async fn data_ready(&self) {
        self.inner.data_ready.notified().await;
    }

    /// Records waiting to be shipped.
    pub fn pending_events(&self) -> u64 {
        self.inner.events.load(Ordering::Acquire)
    }

    /// Encoded bytes waiting to be shipped (what the quota counts).
    pub fn pending_bytes(&self) -> u64 {
        self.inner.bytes.load(Ordering::Acquire)
    }

    /// Bytes the outbox occupies on disk (all segments).
    pub fn disk_bytes(&self) -> u64 {
        dir_size(&self.inner.config.data_dir.join(SEGMENTS_DIR))
    }

    /// Segments on disk, including the active one.
    pub fn segment_count(&self) -> usize {
        self.layout().sealed.len() + 1
    }

    /// Refreshes the gauges that are costly to keep current (disk use).
    /// Called when metrics are scraped.
    pub fn refresh_disk_gauges(&self) {
        self.inner
            .metrics
            .outbox_disk_bytes
            .set(self.disk_bytes() as i64);
        self.inner
            .metrics
            .outbox_segments
            .set(self.segment_count() as i64);
    }

    /// Flushes everything (appends and deletes) to disk. For shutdown.
    pub fn flush(&self) -> Result<(), OutboxError> {
        let active = Arc::clone(&self.layout().active);
        active.flush()?;
        for sealed in &self.layout().sealed {
            if let Sealed::Open(segment) = sealed {
                segment.flush()?;
            }
        }
        Ok(())
    }

    fn layout(&self) -> MutexGuard<'_, Layout> {
        // A panic while holding the lock leaves the layout consistent (every
        // mutation is a single push/pop/assignment), so poisoning is ignored.
        self.inner
            .layout
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The segment with this id, opened again if it is sealed and closed;
    /// `None` when it no longer exists. The caller holds the layout lock.
    fn segment_in(
        layout: &mut Layout,
        segment_id: u64,
        inner: &Inner,
    ) -> Result<Option<Arc<Segment>>, OutboxError> {
        if layout.active.id == segment_id {
            return Ok(Some(Arc::clone(&layout.active)));
        }
        let Some(sealed) = layout.sealed.iter_mut().find(|s| s.id() == segment_id) else {
            return Ok(None);
        };
        Ok(Some(sealed.open(inner)?))
    }

    /// Seals the active segment and starts a new one. Called with the
    /// `writing` and layout locks held, so no group can slip into the old
    /// segment afterwards.
    ///
    /// The old segment is flushed *before* anything changes: if the flush
    /// (or creating the next segment) fails, for instance on a full disk,
    /// the old segment simply stays active, with its records counted and
    /// shippable, and the next append tries again. Dropping it instead would
    /// strand acknowledged records until the next start.
    fn rotate(&self, layout: &mut Layout) -> Result<(), OutboxError> {
        // Appends acknowledged from the old segment must be on disk before it
        // is closed; the flusher only ever flushes the active segment.
        layout.active.flush()?;
        let segments_dir = self.inner.config.data_dir.join(SEGMENTS_DIR);
        let next = Arc::new(Segment::create(
            layout.active.id + 1,
            &segments_dir,
            &self.inner.config,
        )?);
        let old = std::mem::replace(&mut layout.active, next);
        let (events, bytes) = old.live();
        if events == 0 {
            drop_segment(old);
        } else {
            layout.sealed.push_back(Sealed::Closed {
                id: old.id,
                path: old.path.clone(),
                events,
                bytes,
            });
        }
        Ok(())
    }

    /// Seals an active segment whose write or flush failed (sled keeps
    /// failing it from then on) and starts a new one. The broken segment is
    /// not flushed: what was acknowledged from it is already on disk (an
    /// append is acknowledged only after a successful flush), and its
    /// records are counted again from disk when the shipper opens it. Fails,
    /// changing nothing, while no new segment can be created (disk full).
    fn replace_broken_active(&self, layout: &mut Layout) -> Result<(), OutboxError> {
        let segments_dir = self.inner.config.data_dir.join(SEGMENTS_DIR);
        let next = Arc::new(Segment::create(
            layout.active.id + 1,
            &segments_dir,
            &self.inner.config,
        )?);
        let old = std::mem::replace(&mut layout.active, next);
        let (events, bytes) = old.live();
        tracing::warn!(
            segment = old.id,
            events,
            "outbox segment failed to write; sealed, a new one takes appends"
        );
        layout.sealed.push_back(Sealed::Closed {
            id: old.id,
            path: old.path.clone(),
            events,
            bytes,
        });
        Ok(())
    }

    /// Deletes a segment that has nothing left to ship: a sealed one always,
    /// the active one once it has taken `ROTATE_DRAINED_ACTIVE_BYTES` (so the
    /// space sled keeps after deletes is given back). Returns whether a
    /// segment was retired.
    fn retire_if_drained(&self, segment_id: u64) -> bool {
        // A group may be on its way into the active segment: rotate it only
        // when no write is under way (it is tried again at the next removal).
        let writing = self.inner.writing.try_lock().ok();
        let mut layout = self.layout();
        if layout.active.id == segment_id {
            let drained = layout.active.live().0 == 0 && layout.pending.records.is_empty();
            let worth_it = layout.active.written_bytes() >= ROTATE_DRAINED_ACTIVE_BYTES;
            if drained
                && worth_it
                && writing.is_some()
                && let Err(error) = self.rotate(&mut layout)
            {
                tracing::warn!(%error, "could not rotate the drained active segment");
            }
            return false;
        }
        let position = layout.sealed.iter().position(|s| s.id() == segment_id);
        let Some(position) = position else {
            return false;
        };
        let drained = match &layout.sealed[position] {
            Sealed::Open(segment) => segment.live().0 == 0,
            Sealed::Closed { events, .. } => *events == 0,
        };
        if !drained {
            return false;
        }
        if let Some(Sealed::Open(segment)) = layout.sealed.remove(position) {
            drop_segment(segment);
        }
        true
    }

    fn publish_gauges(&self) {
        let metrics = &self.inner.metrics;
        metrics.outbox_events.set(self.pending_events() as i64);
        metrics.outbox_bytes.set(self.pending_bytes() as i64);
    }
}

/// The active segment is rotated once drained if it has taken this much, so
/// its unreclaimed space is bounded by roughly this amount.
const ROTATE_DRAINED_ACTIVE_BYTES: u64 = 4 << 20;

/// Closes a segment and deletes its directory. A failure to delete only
/// leaves garbage that the next start cleans up (an empty segment).
fn drop_segment(segment: Arc<Segment>) {
    let path = segment.path.clone();
    drop(segment);
    remove_dir(&path);
}

fn remove_dir(path: &Path) {
    if let Err(error) = std::fs::remove_dir_all(path) {
        tracing::warn!(path = %path.display(), %error, "could not delete drained outbox segment");
    }
}

fn create_dir(path: &Path) -> Result<(), OutboxError> {
    std::fs::create_dir_all(path).map_err(|source| OutboxError::Io {
        path: path.to_owned(),
        source,
    })
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests;
