//! The embedded [`Store`]: sled 0.34 in one directory.
//!
//! # Trees
//!
//! | tree | key | value |
//! |---|---|---|
//! | `events` | ingest sequence, u64 big-endian | the [`Event`] as JSON |
//! | `events_by_user` | user id bytes, `0x00`, sequence (BE) | empty |
//! | `dedupe` | event id bytes | ingested-at, unix millis (BE u64) |
//! | `dedupe_by_time` | ingested-at millis (BE), event id bytes | empty |
//! | `profiles` | user id bytes | the [`Profile`] as JSON |
//! | `erased_users` | user id bytes | erased-at, unix millis (BE u64) |
//! | `meta` | counter name | u64 BE |
//!
//! # Invariants
//!
//! * One ingest call writes all of its trees in one sled transaction, so a
//!   crash leaves either all of an event (record, index, dedupe entry,
//!   counters) or none of it; there is never a stored event whose id the
//!   dedupe tree forgot, nor a dedupe entry without its event.
//! * The write section is serialized by a mutex: two concurrent calls that
//!   carry the same id cannot both see it as new. (sled would also detect the
//!   conflict, but the mutex makes the order obvious and keeps the sequence
//!   counter in memory.)
//! * A call returns only after `Db::flush` returned, and the flush happens
//!   after the call's own transaction. A call that reports a duplicate has
//!   flushed too, so the original it points at is durable as well. Flushes
//!   run outside the mutex, so concurrent calls share disk syncs.
//! * The sequence only grows; it restarts from the last stored key + 1.
//!
//! # The dedupe window
//!
//! Dedupe entries older than the window (`NUDGE_CP_DEDUPE_WINDOW`, 30 days by
//! default) are pruned so the tree does not grow forever. An id resent after
//! its entry was pruned is stored again: agents resend only unacknowledged
//! batches, within minutes or days, so the window only has to exceed the
//! longest outage an agent can buffer. This is a documented limitation.
//!
//! # Erasure and retention
//!
//! [`Store::erase_user`] writes the user's tombstone under the write mutex
//! before it removes anything, so an ingest either ran before it (and its
//! events are removed with the rest) or sees the tombstone and drops the
//! user's events, acknowledging them as [`IngestOutcome::erased`]. Only
//! `user_id` is checked: an event that carries only an anonymous id is
//! not linked to the erased user. The tombstone holds until an operator
//! lifts it ([`Store::lift_erasure`]). [`Store::prune_events`] removes
//! events from the oldest sequence on and stops at the first one inside
//! the limit: `ingested_at` is the control plane's own clock, so it grows
//! with the sequence (a clock step back only delays a removal).
//!
//! User ids and event ids must not contain `0x00` (the index separator); the
//! gRPC layer rejects such envelopes before they get here.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use jiff::Timestamp;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use super::{
    Cursor, ErasedEvents, Event, EventBody, EventPage, IngestOutcome, Profile, Store, StoreError,
};

const EVENTS_COUNT: &[u8] = b"events_count";
const DEDUPE_COUNT: &[u8] = b"dedupe_count";
/// Prune in chunks so one transaction stays small and ingest is not blocked
/// for long.
const PRUNE_CHUNK: usize = 1000;

/// The sled-backed [`Store`].
pub struct SledStore {
    db: sled::Db,
    events: sled::Tree,
    events_by_user: sled::Tree,
    dedupe: sled::Tree,
    dedupe_by_time: sled::Tree,
    profiles: sled::Tree,
    meta: sled::Tree,
    /// Tombstones of erased users: their later events are dropped.
    erased: sled::Tree,
    /// Serializes writers; holds the next ingest sequence number so it is
    /// assigned only under the lock.
    write: Mutex<u64>,
}

impl SledStore {
    /// The sled database, shared by the notification engine's trees (one
    /// database, one log: a flush covers them all).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Opens (or creates) the store in `dir`, with sled's page cache bounded
    /// to `cache_bytes`. Blocks on disk.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            // Durability comes from the explicit flush before every ack; the
            // background flush only bounds how much an idle crash could lose
            // of writes nobody acked.
            .flush_every_ms(Some(1000))
            .open()?;
        let events = db.open_tree("events")?;
        let next_seq = match events.last()? {
            Some((key, _)) => decode_u64(&key)? + 1,
            None => 1,
        };
        Ok(SledStore {
            events,
            events_by_user: db.open_tree("events_by_user")?,
            dedupe: db.open_tree("dedupe")?,
            dedupe_by_time: db.open_tree("dedupe_by_time")?,
            profiles: db.open_tree("profiles")?,
            meta: db.open_tree("meta")?,
            erased: db.open_tree("erased_users")?,
            db,
            write: Mutex::new(next_seq),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        // A panic while holding the lock cannot leave sled half-written (the
        // transaction either committed or not), so a poisoned lock is safe to
        // keep using.
        self.write
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn counter(&self, name: &[u8]) -> Result<u64, StoreError> {
        match self.meta.get(name)? {
            Some(bytes) => decode_u64(&bytes),
            None => Ok(0),
        }
    }
}

impl Store for SledStore {
    fn ingest(&self, events: Vec<Event>) -> Result<IngestOutcome, StoreError> {
        // Serialize outside the lock: it is the expensive part and needs no
        // ordering.
        let mut encoded = Vec::with_capacity(events.len());
        for event in &events {
            encoded.push(serde_json::to_vec(event)?);
        }
        let outcome = {
            let mut next_seq = self.lock();
            // Checked under the lock that `erase_user` takes to write the
            // tombstone: see the module doc.
            let mut erased = 0;
            let mut kept = Vec::with_capacity(events.len());
            for (event, json) in events.iter().zip(&encoded) {
                match &event.user_id {
                    Some(user_id) if self.erased.contains_key(user_id.as_bytes())? => erased += 1,
                    _ => kept.push((event, json)),
                }
            }
            let start = *next_seq;
            let trees = (
                &self.events,
                &self.events_by_user,
                &self.dedupe,
                &self.dedupe_by_time,
                &self.profiles,
                &self.meta,
            );
            let (outcome, used) = trees
                .transaction(
                    |(tx_events, tx_by_user, tx_dedupe, tx_by_time, tx_profiles, tx_meta)| {
                        let mut outcome = IngestOutcome {
                            erased,
                            ..IngestOutcome::default()
                        };
                        let mut seq = start;
                        let mut seen = HashSet::new();
                        for &(event, json) in &kept {
                            let id = event.id.as_bytes();
                            if !seen.insert(id) || tx_dedupe.get(id)?.is_some() {
                                outcome.duplicates += 1;
                                continue;
                            }
                            let key = seq.to_be_bytes();
                            seq += 1;
                            tx_events.insert(&key, json.as_slice())?;
                            if let Some(user_id) = &event.user_id {
                                tx_by_user.insert(user_key(user_id, seq - 1), &[])?;
                                if let EventBody::Identify { traits } = &event.body {
                                    merge_profile(tx_profiles, user_id, traits, event.ingested_at)?;
                                }
                            }
                            let millis = millis(event.ingested_at);
                            tx_dedupe.insert(id, &millis.to_be_bytes())?;
                            tx_by_time.insert(time_key(millis, id), &[])?;
                            outcome.stored += 1;
                        }
                        let stored = u64::from(outcome.stored);
                        add_counter(tx_meta, EVENTS_COUNT, stored)?;
                        add_counter(tx_meta, DEDUPE_COUNT, stored)?;
                        Ok((outcome, seq - start))
                    },
                )
                .map_err(from_tx)?;
            *next_seq = start + used;
            outcome
        };
        // Outside the lock on purpose: see the module invariants.
        self.db.flush()?;
        Ok(outcome)
    }

    fn events_after(&self, after: Option<Cursor>, limit: usize) -> Result<EventPage, StoreError> {
        let start = after.map_or(0, |cursor| cursor.0.saturating_add(1));
        let mut events = Vec::new();
        let mut cursors = Vec::new();
        for entry in self.events.range(start.to_be_bytes()..).take(limit) {
            let (key, json) = entry?;
            cursors.push(Cursor(seq_of(&key)));
            events.push(serde_json::from_slice(&json)?);
        }
        // The feed never ends: `next` is where to resume, even after a
        // short page (more events arrive later).
        Ok(EventPage {
            events,
            next: cursors.last().copied(),
            cursors,
        })
    }

    fn last_cursor(&self) -> Result<Option<Cursor>, StoreError> {
        Ok(self.events.last()?.map(|(key, _)| Cursor(seq_of(&key))))
    }

    fn events_for_user(
        &self,
        user_id: &str,
        limit: usize,
        after: Option<Cursor>,
    ) -> Result<EventPage, StoreError> {
        let mut prefix = user_id.as_bytes().to_vec();
        prefix.push(0);
        let start = user_key(
            user_id,
            after.map_or(0, |cursor| cursor.0.saturating_add(1)),
        );
        let mut events = Vec::new();
        let mut cursors = Vec::new();
        for entry in self.events_by_user.range(start..) {
            let (key, _) = entry?;
            if !key.starts_with(&prefix) {
                break;
            }
            if events.len() == limit {
                // Another event exists, so the page gets a cursor; it points
                // at the last event returned, not at this one.
                return Ok(EventPage {
                    events,
                    next: cursors.last().copied(),
                    cursors,
                });
            }
            let seq = decode_u64(&key[prefix.len()..])?;
            let Some(json) = self.events.get(seq.to_be_bytes())? else {
                return Err(StoreError::Corrupt(format!(
                    "index points at missing event {seq}"
                )));
            };
            events.push(serde_json::from_slice(&json)?);
            cursors.push(Cursor(seq));
        }
        Ok(EventPage {
            events,
            next: None,
            cursors,
        })
    }

    fn profile(&self, user_id: &str) -> Result<Option<Profile>, StoreError> {
        match self.profiles.get(user_id.as_bytes())? {
            Some(json) => Ok(Some(serde_json::from_slice(&json)?)),
            None => Ok(None),
        }
    }

    fn prune_dedupe(&self, older_than: Timestamp) -> Result<u64, StoreError> {
        let cutoff = millis(older_than).to_be_bytes();
        let mut removed = 0;
        loop {
            let _guard = self.lock();
            let chunk: Vec<sled::IVec> = self
                .dedupe_by_time
                .range(..cutoff.as_slice())
                .keys()
                .take(PRUNE_CHUNK)
                .collect::<Result<_, _>>()?;
            if chunk.is_empty() {
                break;
            }
            let trees = (&self.dedupe, &self.dedupe_by_time, &self.meta);
            let count = trees
                .transaction(|(tx_dedupe, tx_by_time, tx_meta)| {
                    let mut count = 0;
                    for key in &chunk {
                        if tx_dedupe.remove(&key[8..])?.is_some() {
                            count += 1;
                        }
                        tx_by_time.remove(key)?;
                    }
                    sub_counter(tx_meta, DEDUPE_COUNT, count)?;
                    Ok(count)
                })
                .map_err(from_tx)?;
            removed += count;
        }
        if removed > 0 {
            self.db.flush()?;
        }
        Ok(removed)
    }

    fn event_count(&self) -> Result<u64, StoreError> {
        self.counter(EVENTS_COUNT)
    }

    fn dedupe_count(&self) -> Result<u64, StoreError> {
        self.counter(DEDUPE_COUNT)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn erase_user(&self, user_id: &str, at: Timestamp) -> Result<ErasedEvents, StoreError> {
        {
            let _guard = self.lock();
            if !self.erased.contains_key(user_id.as_bytes())? {
                self.erased
                    .insert(user_id.as_bytes(), &millis(at).to_be_bytes())?;
            }
        }
        let mut prefix = user_id.as_bytes().to_vec();
        prefix.push(0);
        let mut erased = ErasedEvents::default();
        loop {
            // No new event of the user can arrive (tombstone), so chunks
            // may let ingest run between them.
            let _guard = self.lock();
            let chunk: Vec<sled::IVec> = self
                .events_by_user
                .scan_prefix(&prefix)
                .keys()
                .take(PRUNE_CHUNK)
                .collect::<Result<_, _>>()?;
            if chunk.is_empty() {
                break;
            }
            let trees = (&self.events, &self.events_by_user, &self.meta);
            let count = trees
                .transaction(|(tx_events, tx_by_user, tx_meta)| {
                    let mut count = 0;
                    for key in &chunk {
                        if tx_events.remove(&key[prefix.len()..])?.is_some() {
                            count += 1;
                        }
                        tx_by_user.remove(key)?;
                    }
                    sub_counter(tx_meta, EVENTS_COUNT, count)?;
                    Ok(count)
                })
                .map_err(from_tx)?;
            erased.events += count;
        }
        erased.profile = self.profiles.remove(user_id.as_bytes())?.is_some();
        self.db.flush()?;
        Ok(erased)
    }

    fn erased_at(&self, user_id: &str) -> Result<Option<Timestamp>, StoreError> {
        match self.erased.get(user_id.as_bytes())? {
            Some(bytes) => {
                let millis = i64::try_from(decode_u64(&bytes)?).unwrap_or(i64::MAX);
                Ok(Some(
                    Timestamp::from_millisecond(millis).unwrap_or(Timestamp::MAX),
                ))
            }
            None => Ok(None),
        }
    }

    fn lift_erasure(&self, user_id: &str) -> Result<bool, StoreError> {
        let lifted = self.erased.remove(user_id.as_bytes())?.is_some();
        if lifted {
            self.db.flush()?;
        }
        Ok(lifted)
    }

    fn prune_events(&self, older_than: Timestamp) -> Result<u64, StoreError> {
        let cutoff = millis(older_than);
        let mut removed = 0;
        loop {
            let _guard = self.lock();
            let mut chunk = Vec::new();
            for entry in self.events.iter().take(PRUNE_CHUNK) {
                let (key, json) = entry?;
                let event: Event = serde_json::from_slice(&json)?;
                if millis(event.ingested_at) >= cutoff {
                    break;
                }
                chunk.push((key, event.user_id));
            }
            if chunk.is_empty() {
                break;
            }
            let trees = (&self.events, &self.events_by_user, &self.meta);
            let count = trees
                .transaction(|(tx_events, tx_by_user, tx_meta)| {
                    let mut count = 0;
                    for (key, user_id) in &chunk {
                        if tx_events.remove(key)?.is_some() {
                            count += 1;
                        }
                        if let Some(user_id) = user_id {
                            tx_by_user.remove(user_key(user_id, seq_of(key)))?;
                        }
                    }
                    sub_counter(tx_meta, EVENTS_COUNT, count)?;
                    Ok(count)
                })
                .map_err(from_tx)?;
            removed += count;
        }
        if removed > 0 {
            self.db.flush()?;
        }
        Ok(removed)
    }
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn from_tx(error: TransactionError<StoreError>) -> StoreError {
    match error {
        TransactionError::Abort(error) => error,
        TransactionError::Storage(error) => StoreError::Engine(error),
    }
}

fn merge_profile(
    profiles: &TransactionalTree,
    user_id: &str,
    traits: &super::JsonObject,
    at: Timestamp,
) -> TxResult<()> {
    let mut profile = match profiles.get(user_id.as_bytes())? {
        Some(json) => serde_json::from_slice::<Profile>(&json)
            .map_err(|error| ConflictableTransactionError::Abort(error.into()))?,
        None => Profile {
            user_id: user_id.to_owned(),
            traits: super::JsonObject::new(),
            updated_at: at,
        },
    };
    for (key, value) in traits {
        profile.traits.insert(key.clone(), value.clone());
    }
    profile.updated_at = at;
    let json = serde_json::to_vec(&profile)
        .map_err(|error| ConflictableTransactionError::Abort(error.into()))?;
    profiles.insert(user_id.as_bytes(), json)?;
    Ok(())
}

fn add_counter(meta: &TransactionalTree, name: &[u8], delta: u64) -> TxResult<()> {
    if delta == 0 {
        return Ok(());
    }
    let current = read_counter(meta, name)?;
    meta.insert(name, &current.saturating_add(delta).to_be_bytes())?;
    Ok(())
}

fn sub_counter(meta: &TransactionalTree, name: &[u8], delta: u64) -> TxResult<()> {
    if delta == 0 {
        return Ok(());
    }
    let current = read_counter(meta, name)?;
    meta.insert(name, &current.saturating_sub(delta).to_be_bytes())?;
    Ok(())
}

fn read_counter(meta: &TransactionalTree, name: &[u8]) -> TxResult<u64> {
    match meta.get(name)? {
        Some(bytes) => decode_u64(&bytes).map_err(ConflictableTransactionError::Abort),
        None => Ok(0),
    }
}

fn user_key(user_id: &str, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(user_id.len() + 9);
    key.extend_from_slice(user_id.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn time_key(millis: u64, id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + id.len());
    key.extend_from_slice(&millis.to_be_bytes());
    key.extend_from_slice(id);
    key
}

fn millis(at: Timestamp) -> u64 {
    // Times before 1970 cannot come from our own clock; clamp rather than
    // wrap.
    u64::try_from(at.as_millisecond()).unwrap_or(0)
}

fn decode_u64(bytes: &[u8]) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("expected 8 bytes, found {}", bytes.len())))?;
    Ok(u64::from_be_bytes(array))
}

/// The sequence number of an `events` key (8 bytes, big-endian).
fn seq_of(key: &[u8]) -> u64 {
    key.try_into().map(u64::from_be_bytes).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::store::JsonObject;

    fn open(dir: &tempfile::TempDir) -> SledStore {
        SledStore::open(dir.path(), 8 * 1024 * 1024).unwrap()
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn track(id: &str, user: &str, ingested_at: Timestamp) -> Event {
        Event {
            id: id.to_owned(),
            user_id: Some(user.to_owned()),
            anonymous_id: None,
            timestamp: None,
            sent_at: None,
            received_at: None,
            ingested_at,
            agent_id: "agent".to_owned(),
            write_key: None,
            context: JsonObject::new(),
            integrations: JsonObject::new(),
            body: EventBody::Track {
                event: "Clicked".to_owned(),
                properties: JsonObject::new(),
            },
        }
    }

    fn identify(id: &str, user: &str, traits: serde_json::Value, ingested_at: Timestamp) -> Event {
        let serde_json::Value::Object(traits) = traits else {
            panic!("traits must be an object")
        };
        Event {
            body: EventBody::Identify { traits },
            ..track(id, user, ingested_at)
        }
    }

    #[test]
    fn resending_a_batch_stores_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let batch = vec![track("a", "u", at(1)), track("b", "u", at(1))];
        let first = store.ingest(batch.clone()).unwrap();
        assert_eq!((first.stored, first.duplicates), (2, 0));
        let second = store.ingest(batch).unwrap();
        assert_eq!((second.stored, second.duplicates), (0, 2));
        assert_eq!(store.event_count().unwrap(), 2);
        assert_eq!(store.dedupe_count().unwrap(), 2);
    }

    #[test]
    fn an_id_repeated_inside_one_batch_counts_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let outcome = store
            .ingest(vec![track("a", "u", at(1)), track("a", "u", at(1))])
            .unwrap();
        assert_eq!((outcome.stored, outcome.duplicates), (1, 1));
        assert_eq!(
            store.events_for_user("u", 10, None).unwrap().events.len(),
            1
        );
    }

    #[test]
    fn concurrent_overlapping_batches_store_each_id_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(&dir));
        let threads: Vec<_> = (0..8)
            .map(|thread| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    // Every thread sends ids 0..50 plus its own 10.
                    let mut batch: Vec<Event> = (0..50)
                        .map(|i| track(&format!("shared-{i}"), "u", at(1)))
                        .collect();
                    batch.extend((0..10).map(|i| track(&format!("own-{thread}-{i}"), "u", at(1))));
                    store.ingest(batch).unwrap()
                })
            })
            .collect();
        let outcomes: Vec<IngestOutcome> = threads
            .into_iter()
            .map(|thread| thread.join().unwrap())
            .collect();
        let stored: u32 = outcomes.iter().map(|outcome| outcome.stored).sum();
        let duplicates: u32 = outcomes.iter().map(|outcome| outcome.duplicates).sum();
        assert_eq!(stored, 50 + 8 * 10);
        assert_eq!(duplicates, 7 * 50);
        assert_eq!(store.event_count().unwrap(), 130);
        let page = store.events_for_user("u", 1000, None).unwrap();
        let mut ids: Vec<&str> = page.events.iter().map(|event| event.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 130);
    }

    #[test]
    fn pages_a_users_events_in_ingest_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let batch: Vec<Event> = (0..5)
            .map(|i| track(&format!("e{i}"), "u", at(1)))
            .collect();
        store.ingest(batch).unwrap();
        store
            .ingest(vec![
                track("other", "u2", at(1)),
                track("u-prefix", "u\u{1}", at(1)),
            ])
            .unwrap();

        let first = store.events_for_user("u", 2, None).unwrap();
        assert_eq!(
            first
                .events
                .iter()
                .map(|e| e.id.as_str())
                .collect::<Vec<_>>(),
            ["e0", "e1"]
        );
        let second = store.events_for_user("u", 2, first.next).unwrap();
        assert_eq!(
            second
                .events
                .iter()
                .map(|e| e.id.as_str())
                .collect::<Vec<_>>(),
            ["e2", "e3"]
        );
        let last = store.events_for_user("u", 2, second.next).unwrap();
        assert_eq!(
            last.events
                .iter()
                .map(|e| e.id.as_str())
                .collect::<Vec<_>>(),
            ["e4"]
        );
        assert_eq!(last.next, None);
        let exact = store.events_for_user("u", 5, None).unwrap();
        assert_eq!((exact.events.len(), exact.next), (5, None));
        assert!(
            store
                .events_for_user("nobody", 10, None)
                .unwrap()
                .events
                .is_empty()
        );
    }

    #[test]
    fn identify_traits_merge_last_write_wins() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        store
            .ingest(vec![identify(
                "i1",
                "u",
                json!({"name": "Ada", "plan": "free"}),
                at(10),
            )])
            .unwrap();
        store
            .ingest(vec![identify("i2", "u", json!({"plan": "pro"}), at(20))])
            .unwrap();
        let profile = store.profile("u").unwrap().unwrap();
        assert_eq!(
            serde_json::Value::Object(profile.traits),
            json!({"name": "Ada", "plan": "pro"})
        );
        assert_eq!(profile.updated_at, at(20));
        assert_eq!(store.profile("nobody").unwrap(), None);
    }

    #[test]
    fn pruning_forgets_only_old_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        store
            .ingest(vec![track("old", "u", at(100)), track("new", "u", at(200))])
            .unwrap();
        assert_eq!(store.prune_dedupe(at(150)).unwrap(), 1);
        assert_eq!(store.dedupe_count().unwrap(), 1);
        assert_eq!(store.event_count().unwrap(), 2, "events stay");
        // The documented limitation: an id resent after its window is new.
        let outcome = store
            .ingest(vec![track("old", "u", at(300)), track("new", "u", at(300))])
            .unwrap();
        assert_eq!((outcome.stored, outcome.duplicates), (1, 1));
        assert_eq!(store.prune_dedupe(at(150)).unwrap(), 0);
    }

    #[test]
    fn reopening_keeps_events_and_dedupe_state() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(&dir);
            store
                .ingest(vec![
                    track("a", "u", at(1)),
                    identify("b", "u", json!({"k": 1}), at(1)),
                ])
                .unwrap();
        }
        let store = open(&dir);
        assert_eq!(store.event_count().unwrap(), 2);
        let outcome = store
            .ingest(vec![track("a", "u", at(2)), track("c", "u", at(2))])
            .unwrap();
        assert_eq!((outcome.stored, outcome.duplicates), (1, 1));
        let ids: Vec<String> = store
            .events_for_user("u", 10, None)
            .unwrap()
            .events
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(
            ids,
            ["a", "b", "c"],
            "the sequence continues after a reopen"
        );
        assert!(store.profile("u").unwrap().is_some());
    }

    #[test]
    fn erasing_a_user_removes_their_events_and_profile_and_drops_later_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        store
            .ingest(vec![
                track("a", "u", at(1)),
                identify("b", "u", json!({"email": "u@example.com"}), at(1)),
                track("c", "other", at(1)),
            ])
            .unwrap();
        let erased = store.erase_user("u", at(5)).unwrap();
        assert_eq!(
            erased,
            ErasedEvents {
                events: 2,
                profile: true
            }
        );
        assert!(
            store
                .events_for_user("u", 10, None)
                .unwrap()
                .events
                .is_empty()
        );
        assert_eq!(store.profile("u").unwrap(), None);
        assert_eq!(store.event_count().unwrap(), 1);
        assert_eq!(store.erased_at("u").unwrap(), Some(at(5)));
        assert_eq!(
            store
                .events_for_user("other", 10, None)
                .unwrap()
                .events
                .len(),
            1
        );

        let late = store
            .ingest(vec![track("d", "u", at(6)), track("e", "other", at(6))])
            .unwrap();
        assert_eq!((late.stored, late.duplicates, late.erased), (1, 0, 1));
        assert!(
            store
                .events_for_user("u", 10, None)
                .unwrap()
                .events
                .is_empty()
        );
        // Erasing again is harmless and keeps the first erase time.
        assert_eq!(
            store.erase_user("u", at(9)).unwrap(),
            ErasedEvents::default()
        );
        assert_eq!(store.erased_at("u").unwrap(), Some(at(5)));

        assert!(store.lift_erasure("u").unwrap());
        assert!(!store.lift_erasure("u").unwrap());
        assert_eq!(
            store.ingest(vec![track("f", "u", at(10))]).unwrap().stored,
            1
        );
    }

    #[test]
    fn pruning_events_removes_only_older_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        store
            .ingest(vec![
                track("old1", "u", at(100)),
                track("old2", "v", at(149)),
                track("edge", "u", at(150)),
                track("new", "u", at(200)),
            ])
            .unwrap();
        assert_eq!(store.prune_events(at(150)).unwrap(), 2);
        let ids: Vec<String> = store
            .events_after(None, 10)
            .unwrap()
            .events
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, ["edge", "new"]);
        assert_eq!(
            store.events_for_user("u", 10, None).unwrap().events.len(),
            2
        );
        assert!(
            store
                .events_for_user("v", 10, None)
                .unwrap()
                .events
                .is_empty()
        );
        assert_eq!(store.event_count().unwrap(), 2);
        assert_eq!(store.prune_events(at(150)).unwrap(), 0);
    }

    #[test]
    fn events_round_trip_through_json() {
        let event = identify("i", "u", json!({"a": [1, 2]}), at(5));
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "identify");
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), event);
    }
}
