//! [`InboxStore`]: the inbox in sled. Trees:
//! * `inbox`: `user \0 item id` → [`InboxItem`] JSON;
//! * `inbox_counts`: `user` → [`Counts`] JSON;
//! * `inbox_changes`: `user \0 seq (8 bytes, big-endian)` → [`Change`] JSON.
//!
//! Every mutation changes the three in one transaction, then publishes its
//! changes to live subscribers.
//!
//! [`InboxStore::erase_user`] (privacy) removes a user's items, counts,
//! change log and pruned mark; it publishes nothing (the user is gone, and
//! a live stream still open sees no more changes).

use std::ops::Bound;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use super::hub::{Hub, Subscription};
use super::query::{Cursor, Half};
use super::{Action, Change, ChangeKind, Counts, InboxError, InboxItem, InboxQuery, Page, Sort};

#[derive(Debug, Clone)]
pub struct InboxStore {
    db: sled::Db,
    items: sled::Tree,
    counts: sled::Tree,
    changes: sled::Tree,
    /// `user` → the highest sequence pruned from their change log.
    pruned: sled::Tree,
    hub: Hub,
    /// Held from taking a change's sequence to publishing it, so changes
    /// commit and publish in sequence order: a reader that has seen seq N
    /// never misses a change below N that was still in flight.
    writes: Arc<Mutex<()>>,
}

type TxResult<T> = Result<T, ConflictableTransactionError<InboxError>>;

fn prefix(user_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(user_id.len() + 1);
    key.extend_from_slice(user_id.as_bytes());
    key.push(0);
    key
}

fn item_key(user_id: &str, id: &str) -> Vec<u8> {
    let mut key = prefix(user_id);
    key.extend_from_slice(id.as_bytes());
    key
}

fn change_key(user_id: &str, seq: u64) -> Vec<u8> {
    let mut key = prefix(user_id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The first key after every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    // Prefixes end in the NUL separator, so this never overflows.
    *end.last_mut().expect("prefixes are not empty") += 1;
    end
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, InboxError> {
    serde_json::from_slice(bytes).map_err(|error| InboxError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        message: error.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("inbox records serialise")
}

fn abort<T>(error: InboxError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(error))
}

fn tx_error(error: TransactionError<InboxError>) -> InboxError {
    match error {
        TransactionError::Abort(error) => error,
        TransactionError::Storage(error) => error.into(),
    }
}

fn check_user(user_id: &str) -> Result<(), InboxError> {
    if user_id.is_empty() || user_id.contains('\0') {
        return Err(InboxError::Invalid(
            "the user id is empty or contains NUL".into(),
        ));
    }
    Ok(())
}

/// The three trees inside a transaction, with the helpers every mutation
/// needs.
struct Tx<'a> {
    items: &'a TransactionalTree,
    counts: &'a TransactionalTree,
    changes: &'a TransactionalTree,
    user_id: &'a str,
}

impl Tx<'_> {
    fn counts(&self) -> TxResult<Counts> {
        match self.counts.get(self.user_id.as_bytes())? {
            Some(bytes) => decode(self.user_id.as_bytes(), &bytes).or_else(abort),
            None => Ok(Counts::default()),
        }
    }

    fn item(&self, id: &str) -> TxResult<Option<InboxItem>> {
        let key = item_key(self.user_id, id);
        match self.items.get(&key)? {
            Some(bytes) => decode(&key, &bytes).map(Some).or_else(abort),
            None => Ok(None),
        }
    }

    fn log(
        &self,
        seq: u64,
        at: Timestamp,
        kind: ChangeKind,
        id: &str,
        item: Option<&InboxItem>,
        counts: &Counts,
    ) -> TxResult<Change> {
        let change = Change {
            seq,
            at,
            kind,
            item: item.cloned(),
            id: id.to_owned(),
            counts: counts.clone(),
        };
        self.changes
            .insert(change_key(self.user_id, seq), encode(&change))?;
        Ok(change)
    }
}

impl InboxStore {
    pub fn open(db: &sled::Db) -> Result<Self, InboxError> {
        Ok(InboxStore {
            db: db.clone(),
            items: db.open_tree("inbox")?,
            counts: db.open_tree("inbox_counts")?,
            changes: db.open_tree("inbox_changes")?,
            pruned: db.open_tree("inbox_changes_pruned")?,
            hub: Hub::default(),
            writes: Arc::default(),
        })
    }

    /// A new change sequence: increasing across restarts (sled persists
    /// its id generator) and never 0, which means "before any change".
    fn next_seq(&self) -> Result<u64, InboxError> {
        Ok(self.db.generate_id()? + 1)
    }

    /// Runs `body` in one transaction over the three trees for `user_id`,
    /// then publishes the changes it logged.
    fn transact<T>(
        &self,
        user_id: &str,
        body: impl Fn(&Tx<'_>) -> TxResult<(T, Vec<Change>)>,
    ) -> Result<T, InboxError> {
        let (value, changes) = (&self.items, &self.counts, &self.changes)
            .transaction(|(items, counts, changes)| {
                body(&Tx {
                    items,
                    counts,
                    changes,
                    user_id,
                })
            })
            .map_err(tx_error)?;
        for change in &changes {
            self.hub.publish(user_id, change);
        }
        Ok(value)
    }

    /// Adds `item` to the user's inbox; an item with that id already there
    /// is kept as it is (a retried delivery), and `false` is returned.
    pub fn add(&self, user_id: &str, item: &InboxItem) -> Result<bool, InboxError> {
        check_user(user_id)?;
        if item.id.is_empty() || item.id.contains('\0') {
            return Err(InboxError::Invalid(
                "the item id is empty or contains NUL".into(),
            ));
        }
        let _in_order = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
        let seq = self.next_seq()?;
        self.transact(user_id, |tx| {
            if tx.item(&item.id)?.is_some() {
                return Ok((false, Vec::new()));
            }
            let mut counts = tx.counts()?;
            counts.add(item);
            tx.items.insert(item_key(user_id, &item.id), encode(item))?;
            tx.counts.insert(user_id.as_bytes(), encode(&counts))?;
            let change = tx.log(
                seq,
                item.created_at,
                ChangeKind::Added,
                &item.id,
                Some(item),
                &counts,
            )?;
            Ok((true, vec![change]))
        })
    }

    pub fn get(&self, user_id: &str, id: &str) -> Result<Option<InboxItem>, InboxError> {
        let key = item_key(user_id, id);
        self.items
            .get(&key)?
            .map(|bytes| decode(&key, &bytes))
            .transpose()
    }

    /// Applies `action` to each of `ids` that is the user's; returns the
    /// items changed (after the change; a deleted item as it was) and the
    /// ids that are not the user's. Ids whose item already is in that
    /// state are neither.
    pub fn apply(
        &self,
        user_id: &str,
        ids: &[String],
        action: Action,
        now: Timestamp,
    ) -> Result<Applied, InboxError> {
        check_user(user_id)?;
        let _in_order = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
        let seqs = ids
            .iter()
            .map(|_| self.next_seq())
            .collect::<Result<Vec<u64>, _>>()?;
        self.transact(user_id, |tx| {
            let mut applied = Applied::default();
            let mut changes = Vec::new();
            let mut counts = tx.counts()?;
            for (id, seq) in ids.iter().zip(&seqs) {
                let Some(mut item) = tx.item(id)? else {
                    applied.missing.push(id.clone());
                    continue;
                };
                let before = item.clone();
                if !action.apply(&mut item, now) {
                    continue;
                }
                counts.remove(&before);
                let key = item_key(user_id, id);
                let change = if action == Action::Delete {
                    tx.items.remove(key)?;
                    tx.log(*seq, now, ChangeKind::Deleted, id, None, &counts)?
                } else {
                    counts.add(&item);
                    tx.items.insert(key, encode(&item))?;
                    tx.log(*seq, now, ChangeKind::Updated, id, Some(&item), &counts)?
                };
                changes.push(change);
                applied.changed.push(if action == Action::Delete {
                    before
                } else {
                    item
                });
            }
            tx.counts.insert(user_id.as_bytes(), encode(&counts))?;
            Ok((applied, changes))
        })
    }

    /// Marks every unread, unarchived item read (of `category` only, when
    /// given); returns how many. Done in pages of `BULK_PAGE` (200) items so one
    /// call on a huge inbox does not build one enormous transaction.
    pub fn read_all(
        &self,
        user_id: &str,
        category: Option<&str>,
        now: Timestamp,
    ) -> Result<usize, InboxError> {
        let query = InboxQuery {
            read: Some(false),
            category: category.map(str::to_owned),
            limit: BULK_PAGE,
            ..InboxQuery::default()
        };
        let mut marked = 0;
        loop {
            // Read items leave the filter, so every page starts at the top.
            let page = self.list(user_id, &query)?;
            if page.items.is_empty() {
                return Ok(marked);
            }
            let ids: Vec<String> = page.items.into_iter().map(|item| item.id).collect();
            let applied = self.apply(user_id, &ids, Action::Read, now)?;
            if applied.changed.is_empty() {
                return Ok(marked);
            }
            marked += applied.changed.len();
        }
    }

    pub fn counts(&self, user_id: &str) -> Result<Counts, InboxError> {
        match self.counts.get(user_id.as_bytes())? {
            Some(bytes) => decode(user_id.as_bytes(), &bytes),
            None => Ok(Counts::default()),
        }
    }

    /// The counts computed by scanning every item (for checks and repair).
    pub fn recount(&self, user_id: &str) -> Result<Counts, InboxError> {
        let mut counts = Counts::default();
        for entry in self.items.scan_prefix(prefix(user_id)) {
            let (key, value) = entry?;
            counts.add(&decode(&key, &value)?);
        }
        Ok(counts)
    }

    /// One page of the user's items (see [`InboxQuery`]).
    pub fn list(&self, user_id: &str, query: &InboxQuery) -> Result<Page, InboxError> {
        let cursor = query
            .cursor
            .as_deref()
            .map(Cursor::decode)
            .transpose()
            .map_err(InboxError::Invalid)?;
        let limit = query.limit.max(1);
        match query.sort {
            Sort::Newest | Sort::Oldest => {
                let after = cursor.map(|c| c.after);
                let newest = query.sort == Sort::Newest;
                let (items, more) = self.scan(user_id, newest, after.as_deref(), limit, |i| {
                    query.matches(i)
                })?;
                let next_cursor = more.then(|| Cursor {
                    half: Half::First,
                    after: items.last().expect("more implies some").id.clone(),
                });
                Ok(Page {
                    items,
                    next_cursor: next_cursor.map(|c| c.encode()),
                })
            }
            Sort::UnreadFirst => self.list_unread_first(user_id, query, cursor, limit),
        }
    }

    fn list_unread_first(
        &self,
        user_id: &str,
        query: &InboxQuery,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<Page, InboxError> {
        let (start_half, after) = match cursor {
            Some(cursor) => (cursor.half, Some(cursor.after)),
            None => (Half::First, None),
        };
        let mut items = Vec::new();
        if start_half == Half::First && query.read != Some(true) {
            let (unread, more) = self.scan(user_id, true, after.as_deref(), limit, |item| {
                !item.is_read() && query.matches(item)
            })?;
            items = unread;
            if more {
                let last = items.last().expect("more implies some").id.clone();
                return Ok(Page {
                    items,
                    next_cursor: Some(
                        Cursor {
                            half: Half::First,
                            after: last,
                        }
                        .encode(),
                    ),
                });
            }
        }
        if query.read == Some(false) {
            return Ok(Page {
                items,
                next_cursor: None,
            });
        }
        let read_after = if start_half == Half::Second {
            after
        } else {
            None
        };
        let room = limit - items.len();
        if room == 0 {
            // The unread half filled the page exactly: the read half may
            // still have items, which the next page starts with.
            let (probe, _) = self.scan(user_id, true, None, 1, |item| {
                item.is_read() && query.matches(item)
            })?;
            let next_cursor = (!probe.is_empty()).then(|| {
                // "Before the first read item": a cursor after the end.
                Cursor {
                    half: Half::Second,
                    after: "\u{10FFFF}".to_owned(),
                }
                .encode()
            });
            return Ok(Page { items, next_cursor });
        }
        let (read, more) = self.scan(user_id, true, read_after.as_deref(), room, |item| {
            item.is_read() && query.matches(item)
        })?;
        items.extend(read);
        let next_cursor = more.then(|| {
            Cursor {
                half: Half::Second,
                after: items.last().expect("more implies some").id.clone(),
            }
            .encode()
        });
        Ok(Page { items, next_cursor })
    }

    /// Up to `limit` of the user's items passing `keep`, newest or oldest
    /// first, strictly after `after`; and whether more would follow.
    fn scan(
        &self,
        user_id: &str,
        newest: bool,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&InboxItem) -> bool,
    ) -> Result<(Vec<InboxItem>, bool), InboxError> {
        let start = prefix(user_id);
        let end = prefix_end(&start);
        let (lower, upper) = match (after, newest) {
            (None, _) => (Bound::Included(start), Bound::Excluded(end)),
            (Some(after), true) => (
                Bound::Included(start),
                Bound::Excluded(item_key(user_id, after)),
            ),
            (Some(after), false) => (
                Bound::Excluded(item_key(user_id, after)),
                Bound::Excluded(end),
            ),
        };
        let range = self.items.range::<Vec<u8>, _>((lower, upper));
        let entries: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = if newest {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        let mut items = Vec::with_capacity(limit.min(64));
        for entry in entries {
            let (key, value) = entry?;
            let item: InboxItem = decode(&key, &value)?;
            if !keep(&item) {
                continue;
            }
            if items.len() == limit {
                return Ok((items, true));
            }
            items.push(item);
        }
        Ok((items, false))
    }

    /// The user's changes after `seq`, oldest first, at most `limit`.
    pub fn changes_after(
        &self,
        user_id: &str,
        seq: u64,
        limit: usize,
    ) -> Result<Vec<Change>, InboxError> {
        let start = change_key(user_id, seq.saturating_add(1));
        let end = prefix_end(&prefix(user_id));
        self.changes
            .range(start..end)
            .take(limit)
            .map(|entry| {
                let (key, value) = entry?;
                decode(&key, &value)
            })
            .collect()
    }

    /// The sequence of the user's newest change (0 when none), or of the
    /// newest pruned one if later: where a fresh client starts, and a
    /// cursor that [`Self::resume_gap`] accepts even once the log's tail
    /// was pruned.
    pub fn last_seq(&self, user_id: &str) -> Result<u64, InboxError> {
        let start = prefix(user_id);
        let end = prefix_end(&start);
        let newest = match self.changes.range(start.clone()..end).next_back() {
            Some(entry) => {
                let (key, _) = entry?;
                let bytes: [u8; 8] = key[start.len()..].try_into().unwrap_or_default();
                u64::from_be_bytes(bytes)
            }
            None => 0,
        };
        Ok(newest.max(self.pruned_seq(user_id.as_bytes())?))
    }

    /// Live changes of the user from now on (see `hub`); the user's
    /// channel is freed when the last subscription drops.
    pub fn subscribe(&self, user_id: &str) -> Subscription {
        self.hub.subscribe(user_id)
    }

    /// Users whose live channel is held (≈ `hub::BUFFER` changes each):
    /// exactly those with an open subscription.
    pub fn live_channels(&self) -> usize {
        self.hub.users()
    }

    /// Forgets changes older than `keep`: clients away longer reload the
    /// list instead of resuming ([`Self::resume_gap`] tells them). Returns
    /// how many were removed.
    pub fn prune_changes(&self, now: Timestamp, keep: Duration) -> Result<usize, InboxError> {
        let cutoff = jiff::SignedDuration::try_from(keep)
            .ok()
            .and_then(|keep| now.checked_sub(keep).ok())
            .unwrap_or(Timestamp::MIN);
        let mut batch = sled::Batch::default();
        let mut pruned_through: std::collections::HashMap<Vec<u8>, u64> = Default::default();
        let mut removed = 0;
        for entry in self.changes.iter() {
            let (key, value) = entry?;
            let change: Change = decode(&key, &value)?;
            if change.at < cutoff {
                let user = key[..key.len().saturating_sub(9)].to_vec();
                let highest = pruned_through.entry(user).or_default();
                *highest = (*highest).max(change.seq);
                batch.remove(key);
                removed += 1;
            }
        }
        for (user, seq) in &pruned_through {
            let previous = self.pruned_seq(user)?;
            self.pruned
                .insert(user.as_slice(), &seq.max(&previous).to_be_bytes())?;
        }
        self.pruned.flush()?;
        self.changes.apply_batch(batch)?;
        Ok(removed)
    }

    /// Every item of the user, in key order (for a privacy export).
    pub fn items_of(&self, user_id: &str) -> Result<Vec<InboxItem>, InboxError> {
        let mut items = Vec::new();
        for entry in self.items.scan_prefix(prefix(user_id)) {
            let (key, value) = entry?;
            items.push(decode(&key, &value)?);
        }
        Ok(items)
    }

    /// Removes everything the inbox holds about the user; returns how many
    /// items were removed. Flushed.
    pub fn erase_user(&self, user_id: &str) -> Result<usize, InboxError> {
        let user_prefix = prefix(user_id);
        let mut removed = 0;
        for entry in self.items.scan_prefix(&user_prefix).keys() {
            if self.items.remove(entry?)?.is_some() {
                removed += 1;
            }
        }
        for entry in self.changes.scan_prefix(&user_prefix).keys() {
            self.changes.remove(entry?)?;
        }
        self.counts.remove(user_id.as_bytes())?;
        self.pruned.remove(user_id.as_bytes())?;
        self.db.flush()?;
        Ok(removed)
    }

    fn pruned_seq(&self, user: &[u8]) -> Result<u64, InboxError> {
        Ok(self
            .pruned
            .get(user)?
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// Whether changes after `seq` were pruned: a client resuming from it
    /// would miss some, so it must reload the list instead.
    pub fn resume_gap(&self, user_id: &str, seq: u64) -> Result<bool, InboxError> {
        Ok(seq < self.pruned_seq(user_id.as_bytes())?)
    }
}

/// Items changed per transaction by [`InboxStore::read_all`].
pub const BULK_PAGE: usize = 200;

/// What [`InboxStore::apply`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    pub changed: Vec<InboxItem>,
    /// Ids that are not the user's (or do not exist).
    pub missing: Vec<String>,
}
