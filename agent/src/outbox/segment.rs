//! One outbox segment: a small sled database holding a contiguous run of
//! records keyed by big-endian sequence number.
//!
//! A segment counts what it holds (`live`) and what it has ever taken
//! (`written_bytes`, which drives rotation). Its directory is named
//! `seg-<id as 16 hex digits>` so that a directory listing sorts by age.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;

use super::{OutboxConfig, OutboxError, Record};

pub(super) struct Segment {
    pub id: u64,
    pub path: PathBuf,
    tree: sled::Db,
    live_events: AtomicU64,
    live_bytes: AtomicU64,
    written_bytes: AtomicU64,
    /// A write or flush failed. sled 0.34 keeps the first I/O error and
    /// fails every later operation of that database with it, so a broken
    /// segment is never written again: the outbox seals it and moves on.
    broken: AtomicBool,
}

/// What start-up found in a segment left by an earlier run.
pub(super) struct Recovered {
    pub events: u64,
    pub bytes: u64,
    pub max_seq: u64,
}

impl Segment {
    pub fn create(id: u64, dir: &Path, config: &OutboxConfig) -> Result<Self, OutboxError> {
        let path = dir.join(format!("seg-{id:016x}"));
        Self::open(id, &path, config)
    }

    pub fn open(id: u64, path: &Path, config: &OutboxConfig) -> Result<Self, OutboxError> {
        let tree = sled::Config::new()
            .path(path)
            .cache_capacity(config.cache_capacity)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(Some(config.flush_every.as_millis().max(1) as u64))
            .open()?;
        let (mut events, mut bytes) = (0, 0);
        for entry in tree.iter() {
            let (_, value) = entry?;
            events += 1;
            bytes += value.len() as u64;
        }
        Ok(Self {
            id,
            path: path.to_owned(),
            tree,
            live_events: AtomicU64::new(events),
            live_bytes: AtomicU64::new(bytes),
            written_bytes: AtomicU64::new(bytes),
            broken: AtomicBool::new(false),
        })
    }

    /// Opens a segment from an earlier run, counts it and closes it again.
    /// A segment sled cannot open (or that panics sled) yields the reason,
    /// so that start-up can move it aside instead of crash-looping.
    pub fn recover(id: u64, path: &Path, config: &OutboxConfig) -> Result<Recovered, String> {
        let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let segment = Self::open(id, path, config)?;
            let max_seq = match segment.tree.last()? {
                Some((key, _)) => decode_seq(&key).ok_or_else(|| {
                    sled::Error::Unsupported(format!("malformed key of {} bytes", key.len()))
                })?,
                None => 0,
            };
            let (events, bytes) = segment.live();
            Ok::<_, OutboxError>(Recovered {
                events,
                bytes,
                max_seq,
            })
        }));
        match attempt {
            Ok(Ok(recovered)) => Ok(recovered),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("sled panicked while opening the segment".into()),
        }
    }

    /// Inserts records atomically: all are visible or none.
    pub fn insert(&self, seqs: &[u64], records: &[Bytes]) -> Result<(), OutboxError> {
        let mut batch = sled::Batch::default();
        let mut bytes = 0;
        for (seq, record) in seqs.iter().zip(records) {
            batch.insert(&seq.to_be_bytes(), record.as_ref());
            bytes += record.len() as u64;
        }
        if let Err(error) = self.tree.apply_batch(batch) {
            self.mark_broken();
            return Err(error.into());
        }
        self.live_events
            .fetch_add(records.len() as u64, Ordering::AcqRel);
        self.live_bytes.fetch_add(bytes, Ordering::AcqRel);
        self.written_bytes.fetch_add(bytes, Ordering::AcqRel);
        Ok(())
    }

    /// Reads records in sequence order up to `max_seq`, bounded by count and
    /// bytes (always at least one record if any is there).
    pub fn read(
        &self,
        max_seq: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, OutboxError> {
        let mut records = Vec::new();
        let mut bytes = 0;
        for entry in self.tree.range(..=max_seq.to_be_bytes()) {
            let (key, value) = entry?;
            let Some(seq) = decode_seq(&key) else {
                // Not a key this outbox writes: leave it, never ship it.
                continue;
            };
            if !records.is_empty() && bytes + value.len() > max_bytes {
                break;
            }
            bytes += value.len();
            records.push(Record {
                seq,
                bytes: Bytes::copy_from_slice(&value),
            });
            if records.len() >= max_events {
                break;
            }
        }
        Ok(records)
    }

    /// Deletes records; returns how many records and bytes were really
    /// removed (a record already gone is not counted twice).
    pub fn remove(&self, records: &[Record]) -> Result<(u64, u64), OutboxError> {
        let (mut events, mut bytes) = (0, 0);
        for record in records {
            if let Some(old) = self.tree.remove(record.seq.to_be_bytes())? {
                events += 1;
                bytes += old.len() as u64;
            }
        }
        self.live_events.fetch_sub(events, Ordering::AcqRel);
        self.live_bytes.fetch_sub(bytes, Ordering::AcqRel);
        Ok((events, bytes))
    }

    /// Flushes to disk; a failure marks the segment broken.
    pub fn flush(&self) -> Result<(), OutboxError> {
        if let Err(error) = self.tree.flush() {
            self.mark_broken();
            return Err(error.into());
        }
        Ok(())
    }

    pub fn mark_broken(&self) {
        self.broken.store(true, Ordering::Release);
    }

    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Records and bytes the segment still holds.
    pub fn live(&self) -> (u64, u64) {
        (
            self.live_events.load(Ordering::Acquire),
            self.live_bytes.load(Ordering::Acquire),
        )
    }

    pub fn written_bytes(&self) -> u64 {
        self.written_bytes.load(Ordering::Acquire)
    }
}

fn decode_seq(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// Segment directories in `dir`, oldest first. Other entries are ignored.
pub(super) fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, OutboxError> {
    let entries = std::fs::read_dir(dir).map_err(|source| OutboxError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut segments: Vec<(u64, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let id = u64::from_str_radix(name.to_str()?.strip_prefix("seg-")?, 16).ok()?;
            Some((id, entry.path()))
        })
        .collect();
    segments.sort_unstable_by_key(|(id, _)| *id);
    Ok(segments)
}
