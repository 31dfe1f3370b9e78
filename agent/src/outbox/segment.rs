//! One outbox segment: a small sled database holding a contiguous run of
//! records in sequence order.
//!
//! # Layout: one sled record per group commit
//!
//! Each group commit is stored as one sled record per 8 KiB of calls
//! ([`GROUP_CHUNK_BYTES`]): the key is the record's first sequence number
//! (big-endian) followed by the tag byte `g`, the value its calls framed as
//! `seq (u64 BE) | len (u32 BE) | bytes`. A flush then writes a few keys
//! and values instead of one per call, which is what made each call
//! expensive (issue 14: a B-tree update, log entry and dirty page per call,
//! under the lock every request took). Acknowledged records are
//! deleted by rewriting their group without them (or deleting it once
//! empty). Keys of exactly 8 bytes are single records written by earlier
//! versions; they are still read and deleted, so an upgrade loses nothing.
//!
//! # Durable means fdatasync
//!
//! sled 0.34's flush ends in `sync_file_range` on Linux, which writes the
//! data out but neither the file's metadata (its new size and blocks: the
//! log only grows) nor the disk's volatile write cache, so an acknowledged
//! call could be lost to a power cut or a kernel crash. A flush therefore
//! also calls `fdatasync` on sled's log file, and a new segment's
//! directory entries are synced when it is created.
//!
//! A segment counts what it holds (`live`: records and their bytes,
//! without the framing) and what it has ever taken (`written_bytes`, which
//! drives rotation). Its directory is named `seg-<id as 16 hex digits>` so
//! that a directory listing sorts by age.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;

use super::{OutboxConfig, OutboxError, Record};

pub(super) struct Segment {
    pub id: u64,
    pub path: PathBuf,
    tree: sled::Db,
    /// sled's log file, for `fdatasync` after sled's own flush.
    log: std::fs::File,
    live_events: AtomicU64,
    live_bytes: AtomicU64,
    written_bytes: AtomicU64,
    /// A write or flush failed. sled 0.34 keeps the first I/O error and
    /// fails every later operation of that database with it, so a broken
    /// segment is never written again: the outbox seals it and moves on.
    broken: AtomicBool,
    /// Serialises removals: each rewrites whole groups (read, filter, write).
    removing: Mutex<()>,
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
        let segment = Self::open(id, &path, config)?;
        // The new files, and the segment's own entry in the outbox
        // directory, must survive a crash before anything is acked there.
        sync_dir(&path)?;
        sync_dir(dir)?;
        Ok(segment)
    }

    pub fn open(id: u64, path: &Path, config: &OutboxConfig) -> Result<Self, OutboxError> {
        let tree = sled::Config::new()
            .path(path)
            .cache_capacity(config.cache_capacity)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(Some(config.flush_every.as_millis().max(1) as u64))
            .open()?;
        let log = std::fs::File::open(path.join(SLED_LOG)).map_err(|source| OutboxError::Io {
            path: path.join(SLED_LOG),
            source,
        })?;
        let (mut events, mut bytes) = (0, 0);
        for entry in tree.iter() {
            let (key, value) = entry?;
            for_each_record(&key, &value, |_, record| {
                events += 1;
                bytes += record.len() as u64;
            });
        }
        Ok(Self {
            id,
            path: path.to_owned(),
            tree,
            log,
            live_events: AtomicU64::new(events),
            live_bytes: AtomicU64::new(bytes),
            written_bytes: AtomicU64::new(bytes),
            broken: AtomicBool::new(false),
            removing: Mutex::new(()),
        })
    }

    /// Opens a segment from an earlier run, counts it and closes it again.
    /// A segment sled cannot open (or that panics sled) yields the reason,
    /// so that start-up can move it aside instead of crash-looping.
    pub fn recover(id: u64, path: &Path, config: &OutboxConfig) -> Result<Recovered, String> {
        let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let segment = Self::open(id, path, config)?;
            let max_seq = match segment.tree.last()? {
                Some((key, value)) => {
                    let mut last = None;
                    for_each_record(&key, &value, |seq, _| last = Some(seq));
                    // A group whose framing is damaged still says where it
                    // started: sequence numbers are never reused.
                    last.or_else(|| decode_seq(&key[..key.len().min(8)]))
                        .ok_or_else(|| {
                            sled::Error::Unsupported(format!(
                                "malformed key of {} bytes",
                                key.len()
                            ))
                        })?
                }
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

    /// Inserts one group commit: `records` get the sequence numbers
    /// `first_seq..`, all visible or none. One sled record per
    /// [`GROUP_CHUNK_BYTES`] of records (see there why not one per group).
    pub fn insert_group(&self, first_seq: u64, records: &[Bytes]) -> Result<(), OutboxError> {
        let bytes: usize = records.iter().map(Bytes::len).sum();
        let mut batch = sled::Batch::default();
        let mut chunk: Vec<u8> = Vec::new();
        let mut chunk_first = first_seq;
        for (seq, record) in (first_seq..).zip(records) {
            if !chunk.is_empty() && chunk.len() + FRAME_HEADER + record.len() > GROUP_CHUNK_BYTES {
                batch.insert(&group_key(chunk_first), std::mem::take(&mut chunk));
                chunk_first = seq;
            }
            push_frame(&mut chunk, seq, record);
        }
        if !chunk.is_empty() {
            batch.insert(&group_key(chunk_first), chunk);
        }
        if let Err(error) = self.tree.apply_batch(batch) {
            self.mark_broken();
            return Err(error.into());
        }
        self.live_events
            .fetch_add(records.len() as u64, Ordering::AcqRel);
        self.live_bytes.fetch_add(bytes as u64, Ordering::AcqRel);
        self.written_bytes.fetch_add(bytes as u64, Ordering::AcqRel);
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
        // Every key starting with a sequence number up to `max_seq`.
        let entries = match max_seq.checked_add(1) {
            Some(end) => self.tree.range(..end.to_be_bytes()),
            None => self.tree.range::<&[u8], _>(..),
        };
        'entries: for entry in entries {
            let (key, value) = entry?;
            // One copy of the group; its records are slices of it.
            let value = Bytes::copy_from_slice(&value);
            let mut full = false;
            for_each_record(&key, &value, |seq, record| {
                if full || seq > max_seq {
                    return;
                }
                if !records.is_empty() && bytes + record.len() > max_bytes {
                    full = true;
                    return;
                }
                bytes += record.len();
                records.push(Record {
                    seq,
                    bytes: value.slice_ref(record),
                });
                full = records.len() >= max_events;
            });
            if full {
                break 'entries;
            }
        }
        Ok(records)
    }

    /// Deletes records; returns how many records and bytes were really
    /// removed (a record already gone is not counted twice).
    pub fn remove(&self, records: &[Record]) -> Result<(u64, u64), OutboxError> {
        let _one_at_a_time = self
            .removing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let doomed: HashSet<u64> = records.iter().map(|r| r.seq).collect();
        // The group (or legacy single record) holding each record.
        let mut keys: BTreeMap<sled::IVec, sled::IVec> = BTreeMap::new();
        for record in records {
            let holder = self
                .tree
                .range(..=group_key(record.seq))
                .next_back()
                .transpose()?;
            if let Some((key, value)) = holder {
                keys.entry(key).or_insert(value);
            }
        }
        let (mut events, mut bytes) = (0, 0);
        for (key, value) in keys {
            let mut kept = Vec::with_capacity(value.len());
            let mut removed = false;
            for_each_record(&key, &value, |seq, record| {
                if doomed.contains(&seq) {
                    events += 1;
                    bytes += record.len() as u64;
                    removed = true;
                } else {
                    push_frame(&mut kept, seq, record);
                }
            });
            if !removed {
                continue;
            }
            if kept.is_empty() || key.len() != GROUP_KEY_LEN {
                self.tree.remove(&key)?;
            } else {
                self.tree.insert(&key, kept)?;
            }
        }
        self.live_events.fetch_sub(events, Ordering::AcqRel);
        self.live_bytes.fetch_sub(bytes, Ordering::AcqRel);
        Ok((events, bytes))
    }

    /// Flushes to disk, `fdatasync` included (see the module doc); a
    /// failure marks the segment broken.
    pub fn flush(&self) -> Result<(), OutboxError> {
        if let Err(error) = self.tree.flush() {
            self.mark_broken();
            return Err(error.into());
        }
        if let Err(source) = self.log.sync_data() {
            self.mark_broken();
            return Err(OutboxError::Io {
                path: self.path.join(SLED_LOG),
                source,
            });
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

    /// sled records (groups) the segment holds, for tests.
    #[cfg(test)]
    pub fn sled_records(&self) -> usize {
        self.tree.len()
    }

    pub fn written_bytes(&self) -> u64 {
        self.written_bytes.load(Ordering::Acquire)
    }
}

/// The file sled 0.34 keeps its log (all data) in, inside its directory.
const SLED_LOG: &str = "db";

/// Makes a directory's entries durable (a new file or subdirectory in it).
fn sync_dir(path: &Path) -> Result<(), OutboxError> {
    std::fs::File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| OutboxError::Io {
            path: path.to_owned(),
            source,
        })
}

fn decode_seq(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// The tag byte after a group's first sequence number.
const GROUP_TAG: u8 = b'g';
const GROUP_KEY_LEN: usize = 9;
/// `seq (u64 BE) | len (u32 BE)` before each record of a group.
const FRAME_HEADER: usize = 12;
/// Most bytes of records in one sled record. sled splits a leaf only past
/// 16 entries, whatever their size, and rewrites a whole leaf when it
/// consolidates one, so large values make large leaves to copy; 8 KiB keeps
/// a leaf near 128 KiB (and far below sled's inline limit, a quarter of
/// its 512 KiB log segment, past which values become blob files), while a
/// group commit of single calls (≈ 50 × 280 B here) is still one or two
/// records. Deleting part of a group rewrites at most this much.
const GROUP_CHUNK_BYTES: usize = 8 << 10;

fn group_key(first_seq: u64) -> [u8; GROUP_KEY_LEN] {
    let mut key = [GROUP_TAG; GROUP_KEY_LEN];
    key[..8].copy_from_slice(&first_seq.to_be_bytes());
    key
}

fn push_frame(value: &mut Vec<u8>, seq: u64, record: &[u8]) {
    value.extend_from_slice(&seq.to_be_bytes());
    // Records are at most a few hundred KB (the intake's limits).
    value.extend_from_slice(&(record.len() as u32).to_be_bytes());
    value.extend_from_slice(record);
}

/// Calls `each(seq, record)` for every record of one sled entry: a group,
/// or a legacy single record (8-byte key). A key of any other shape is not
/// the outbox's and yields nothing (it is never shipped); a group whose
/// framing is cut short yields the records before the damage.
fn for_each_record<'a>(key: &[u8], value: &'a [u8], mut each: impl FnMut(u64, &'a [u8])) {
    if let Some(seq) = decode_seq(key) {
        each(seq, value);
        return;
    }
    if key.len() != GROUP_KEY_LEN || key[8] != GROUP_TAG {
        return;
    }
    let mut rest = value;
    while rest.len() >= FRAME_HEADER {
        let seq = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
        let len = u32::from_be_bytes(rest[8..12].try_into().expect("4 bytes")) as usize;
        let Some(record) = rest.get(FRAME_HEADER..FRAME_HEADER + len) else {
            tracing::error!(seq, "outbox group record is cut short; the rest is skipped");
            return;
        };
        each(seq, record);
        rest = &rest[FRAME_HEADER + len..];
    }
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
