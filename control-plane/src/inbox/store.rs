//! [`InboxStore`]: the inbox's rules over its SQL tables
//! ([`crate::storage::InboxTable`]), and the live hub that publishes each
//! committed change to the user's open streams.
//!
//! # Promises
//!
//! * Every mutation is one transaction (items, counts, change log) and is
//!   published after it commits, **in sequence order per user**: a
//!   per-user lock (striped) is held from the transaction's start to the
//!   end of its publishing, so a live reader that has seen seq N never
//!   misses a change below N that was still in flight.
//! * **Changes committed by another process reach this one's subscribers**
//!   (PostgreSQL replicas). Each commit that logs changes sends a `NOTIFY`
//!   naming its users and their last seq (`storage::inbox`); this
//!   process's listener turns one for a user with subscribers into
//!   [`Live::Elsewhere`](super::Live::Elsewhere), and a listener (re)connect into one for every
//!   subscribed user. Subscribers (the live stream's feed) read the log
//!   after the last seq they handled when they hear it, and also when a
//!   live change skips a seq. Why that is gap-free and in order:
//!   - a user's seqs are taken under their counts row's lock, held to
//!     commit, so seq N+1 commits after seq N (on any replica): whoever
//!     sees N+1 committed finds every seq below it in the log;
//!   - a subscriber hands on only seq `last + 1`: a local change that
//!     skips seqs (they were committed elsewhere, their notice is still
//!     on its way) and every notice make it read the log after `last`
//!     instead, which holds them; what it reads again is dropped by seq;
//!   - every commit elsewhere is heard after it commits, unless the
//!     listener was disconnected; after reconnecting it listens first and
//!     then tells every subscriber to read, so a commit during the outage
//!     is in the log they read, and a later one is heard.
//!
//!   Each subscriber reads for itself: no per-user position to keep in
//!   the hub, one indexed query per open stream of the user per remote
//!   commit (a user's streams are capped), and nothing for users without
//!   streams here. On SQLite there is no listener: one process writes.
//! * **Concurrent adds share a commit.** Adds (the in-app channel's, one
//!   per delivery) queue for one writer task that commits whatever is
//!   waiting in one transaction, holding the stripes of every user in it:
//!   one fsync for many deliveries instead of one each. A group whose
//!   transaction fails fails every add in it.
//! * [`InboxStore::erase_user`] (privacy) removes a user's items, counts,
//!   change log and pruned mark; it publishes nothing (the user is gone,
//!   and a live stream still open sees no more changes).

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{Mutex, MutexGuard, mpsc, oneshot};

use super::hub::{Hub, Subscription};
use super::query::{Cursor, Half};
use super::{Action, Change, Counts, InboxError, InboxItem, InboxQuery, Page, Sort};
use crate::storage::{InboxNotice, InboxTable, ItemRange, Listening, StorageError};

/// Per-user write locks, striped: enough that unrelated users rarely
/// share one, few enough to allocate once.
const STRIPES: usize = 256;

/// Items one group commit of adds takes at most (an add is never split).
const GROUP_MAX_ITEMS: usize = 2_000;

#[derive(Debug, Clone)]
pub struct InboxStore {
    table: InboxTable,
    hub: Hub,
    /// Held from a user's transaction to the end of its publishing, so
    /// changes publish in sequence order (see the module doc).
    writes: Arc<[Mutex<()>]>,
    /// Adds queue here for the group-commit writer (see the module doc).
    adds: mpsc::Sender<QueuedAdd>,
    /// On PostgreSQL, turns other processes' commits into
    /// [`Live::Elsewhere`](super::Live::Elsewhere) for this hub's subscribers (see the module
    /// doc); `None` on SQLite. Stops with the last clone.
    _listening: Option<Arc<Listening>>,
}

/// One `add_many` waiting for the writer.
#[derive(Debug)]
struct QueuedAdd {
    user_id: String,
    items: Vec<InboxItem>,
    reply: oneshot::Sender<Result<Vec<Change>, InboxError>>,
}

/// What the writer task holds: the store without the queue's sender, so
/// it ends once every [`InboxStore`] is gone.
struct Writer {
    table: InboxTable,
    hub: Hub,
    writes: Arc<[Mutex<()>]>,
}

fn stripe_of(user_id: &str) -> usize {
    let mut hasher = std::hash::DefaultHasher::new();
    user_id.hash(&mut hasher);
    usize::try_from(hasher.finish() % STRIPES as u64).unwrap_or_default()
}

fn check_user(user_id: &str) -> Result<(), InboxError> {
    if user_id.is_empty() || user_id.contains('\0') {
        return Err(InboxError::Invalid(
            "the user id is empty or contains NUL".into(),
        ));
    }
    Ok(())
}

fn check_item(item: &InboxItem) -> Result<(), InboxError> {
    if item.id.is_empty() || item.id.contains('\0') {
        return Err(InboxError::Invalid(
            "the item id is empty or contains NUL".into(),
        ));
    }
    Ok(())
}

impl InboxStore {
    /// The store over `table`, with a hub of its own: open one per process
    /// ([`crate::storage::Stores`] does) so every writer publishes to
    /// every live stream.
    /// Spawns the adds' writer task: call inside a tokio runtime.
    pub fn new(table: InboxTable) -> Self {
        let hub = Hub::default();
        let writes: Arc<[Mutex<()>]> = (0..STRIPES).map(|_| Mutex::new(())).collect();
        let (adds, queue) = mpsc::channel(1024);
        let writer = Writer {
            table: table.clone(),
            hub: hub.clone(),
            writes: Arc::clone(&writes),
        };
        tokio::spawn(writer.run(queue));
        let listening = table.listen({
            let hub = hub.clone();
            move |notice| match notice {
                InboxNotice::Changed { user_id, seq } => hub.elsewhere(&user_id, seq),
                InboxNotice::Anything => hub.resync_all(),
            }
        });
        InboxStore {
            table,
            hub,
            writes,
            adds,
            _listening: listening.map(Arc::new),
        }
    }

    async fn in_order(&self, user_id: &str) -> MutexGuard<'_, ()> {
        self.writes[stripe_of(user_id)].lock().await
    }

    fn publish(&self, user_id: &str, changes: &[Change]) {
        for change in changes {
            self.hub.publish(user_id, change);
        }
    }

    /// Adds `item` to the user's inbox; an item with that id already there
    /// is kept as it is (a retried delivery), and `false` is returned.
    pub async fn add(&self, user_id: &str, item: &InboxItem) -> Result<bool, InboxError> {
        let added = self.add_many(user_id, std::slice::from_ref(item)).await?;
        Ok(added == 1)
    }

    /// Adds each of `items` the user does not have yet, in one transaction
    /// (cheaper than one `add` each); returns how many were new.
    pub async fn add_many(&self, user_id: &str, items: &[InboxItem]) -> Result<usize, InboxError> {
        check_user(user_id)?;
        items.iter().try_for_each(check_item)?;
        if items.is_empty() {
            return Ok(0);
        }
        let (reply, answer) = oneshot::channel();
        let queued = QueuedAdd {
            user_id: user_id.to_owned(),
            items: items.to_vec(),
            reply,
        };
        let stopped = || InboxError::from(StorageError::Unavailable("inbox writer stopped".into()));
        self.adds.send(queued).await.map_err(|_| stopped())?;
        // A caller that goes away does not undo the add: it commits, and a
        // retry finds the item.
        let changes = answer.await.map_err(|_| stopped())??;
        Ok(changes.len())
    }

    pub async fn get(&self, user_id: &str, id: &str) -> Result<Option<InboxItem>, InboxError> {
        // No item has such an id (`check_item`), and PostgreSQL could not
        // even compare it.
        if id.contains('\0') {
            return Ok(None);
        }
        Ok(self.table.get(user_id, id).await?)
    }

    /// Applies `action` to each of `ids` that is the user's, in one
    /// transaction; returns the items changed (after the change; a deleted
    /// item as it was) and the ids that are not the user's. Ids whose item
    /// already is in that state are neither.
    pub async fn apply(
        &self,
        user_id: &str,
        ids: &[String],
        action: Action,
        now: Timestamp,
    ) -> Result<Applied, InboxError> {
        check_user(user_id)?;
        if let Action::Snooze(until) = action {
            super::snooze::check_until(until, now)?;
        }
        // An id with a NUL is no item's (`check_item`): missing, as any
        // unknown id is, without asking the database (PostgreSQL refuses
        // NUL in text).
        let (ids, impossible): (Vec<String>, Vec<String>) =
            ids.iter().cloned().partition(|id| !id.contains('\0'));
        let _in_order = self.in_order(user_id).await;
        let (mut applied, changes) = self.table.apply(user_id, &ids, action, now).await?;
        applied.missing.extend(impossible);
        self.publish(user_id, &changes);
        Ok(applied)
    }

    /// Marks every unread, unarchived item read (of `category` only, when
    /// given); returns how many. Done in pages of `BULK_PAGE` (200) items so one
    /// call on a huge inbox does not build one enormous transaction.
    pub async fn read_all(
        &self,
        user_id: &str,
        category: Option<&str>,
        now: Timestamp,
    ) -> Result<usize, InboxError> {
        let mut query = InboxQuery {
            read: Some(false),
            category: category.map(str::to_owned),
            limit: BULK_PAGE,
            ..InboxQuery::default()
        };
        let mut marked = 0;
        loop {
            // Pages follow the cursor: a page's items are behind it once
            // read, and a page may be empty with a cursor (a bounded scan
            // that found nothing unread yet).
            let page = self.list(user_id, &query).await?;
            if !page.items.is_empty() {
                let ids: Vec<String> = page.items.into_iter().map(|item| item.id).collect();
                let applied = self.apply(user_id, &ids, Action::Read, now).await?;
                marked += applied.changed.len();
            }
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => return Ok(marked),
            }
        }
    }

    /// Up to `limit` items whose snooze is due at `now`, as `(user_id,
    /// id)` (see [`super::snooze`]).
    pub async fn due_snoozes(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<(String, String)>, InboxError> {
        Ok(self.table.due_snoozes(now, limit).await?)
    }

    pub async fn counts(&self, user_id: &str) -> Result<Counts, InboxError> {
        Ok(self.table.counts(user_id).await?)
    }

    /// The counts computed from every item (for checks and repair).
    pub async fn recount(&self, user_id: &str) -> Result<Counts, InboxError> {
        let mut counts = Counts::default();
        for item in self.table.items_of(user_id).await? {
            counts.add(&item);
        }
        Ok(counts)
    }

    /// One page of the user's items (see [`InboxQuery`]). At most
    /// [`SCAN_BUDGET`] items are examined: a page may be short, or empty,
    /// and still carry a cursor (see [`Page`]).
    pub async fn list(&self, user_id: &str, query: &InboxQuery) -> Result<Page, InboxError> {
        query.check()?;
        let cursor = query
            .cursor
            .as_deref()
            .map(Cursor::decode)
            .transpose()
            .map_err(InboxError::Invalid)?;
        let limit = query.limit.max(1);
        let mut budget = SCAN_BUDGET;
        match query.sort {
            Sort::Newest | Sort::Oldest => {
                let after = cursor.map(|c| c.after);
                let newest = query.sort == Sort::Newest;
                let range = ItemRange {
                    newest,
                    after: after.as_deref(),
                    ..query.range()
                };
                let (items, resume) = self
                    .scan(user_id, range, limit, &mut budget, |item| {
                        query.matches(item)
                    })
                    .await?;
                let next_cursor = resume.map(|at| Cursor {
                    half: Half::First,
                    after: position(at, newest),
                });
                Ok(Page {
                    items,
                    next_cursor: next_cursor.map(|c| c.encode()),
                })
            }
            Sort::UnreadFirst => {
                self.list_unread_first(user_id, query, cursor, limit, &mut budget)
                    .await
            }
        }
    }

    async fn list_unread_first(
        &self,
        user_id: &str,
        query: &InboxQuery,
        cursor: Option<Cursor>,
        limit: usize,
        budget: &mut usize,
    ) -> Result<Page, InboxError> {
        let (start_half, after) = match cursor {
            Some(cursor) => (cursor.half, Some(cursor.after)),
            None => (Half::First, None),
        };
        let keep_unread = |item: &InboxItem| !item.is_read() && query.matches(item);
        let keep_read = |item: &InboxItem| item.is_read() && query.matches(item);
        let mut items = Vec::new();
        if start_half == Half::First && query.read != Some(true) {
            let range = ItemRange {
                after: after.as_deref(),
                read: Some(false),
                ..query.range()
            };
            let (unread, resume) = self
                .scan(user_id, range, limit, budget, keep_unread)
                .await?;
            items = unread;
            if let Some(at) = resume {
                let next = Cursor {
                    half: Half::First,
                    after: position(at, true),
                };
                return Ok(Page {
                    items,
                    next_cursor: Some(next.encode()),
                });
            }
        }
        if query.read == Some(false) {
            return Ok(Page {
                items,
                next_cursor: None,
            });
        }
        // "Before the first read item": a cursor after the end.
        let read_half_start = || {
            Cursor {
                half: Half::Second,
                after: position(None, true),
            }
            .encode()
        };
        let read_after = if start_half == Half::Second {
            after
        } else {
            None
        };
        let room = limit - items.len();
        if room == 0 {
            // The unread half filled the page exactly: the read half may
            // still have items, which the next page starts with.
            let range = ItemRange {
                read: Some(true),
                ..query.range()
            };
            let (probe, resume) = self.scan(user_id, range, 1, budget, keep_read).await?;
            let next_cursor = (!probe.is_empty() || resume.is_some()).then(read_half_start);
            return Ok(Page { items, next_cursor });
        }
        let range = ItemRange {
            after: read_after.as_deref(),
            read: Some(true),
            ..query.range()
        };
        let (read, resume) = self.scan(user_id, range, room, budget, keep_read).await?;
        items.extend(read);
        let next_cursor = resume.map(|at| {
            Cursor {
                half: Half::Second,
                after: position(at, true),
            }
            .encode()
        });
        Ok(Page { items, next_cursor })
    }

    /// Up to `limit` of the user's items in `range` passing `keep`, and
    /// where a next page resumes: `None` when nothing more can follow,
    /// else `Some(after)` (`after` an id, or `None` for the range's
    /// start). SQL checks what it can (`range`), `keep` the rest, over
    /// windows of the key range until the page is full, the range ends or
    /// `budget` rows were examined (the budget is shared by the scans of
    /// one request and spent here).
    async fn scan(
        &self,
        user_id: &str,
        range: ItemRange<'_>,
        limit: usize,
        budget: &mut usize,
        keep: impl Fn(&InboxItem) -> bool,
    ) -> Result<(Vec<InboxItem>, Option<Option<String>>), InboxError> {
        let mut items: Vec<InboxItem> = Vec::with_capacity(limit.min(64));
        let mut at = range.after.map(str::to_owned);
        loop {
            if *budget == 0 {
                // Everything after the last item up to `at` was examined
                // and kept nothing: the next page starts after `at`.
                return Ok((items, Some(at)));
            }
            let window = (*budget).min(SCAN_WINDOW);
            let page = ItemRange {
                after: at.as_deref(),
                ..range.clone()
            };
            let scanned = self.table.scan(user_id, &page, window).await?;
            *budget = budget.saturating_sub(scanned.examined);
            for item in scanned.items {
                if !keep(&item) {
                    continue;
                }
                if items.len() == limit {
                    // One more than the page holds: the page ends at its
                    // last item.
                    let last = items.last().map(|item| item.id.clone());
                    return Ok((items, Some(last)));
                }
                items.push(item);
            }
            if scanned.examined < window {
                return Ok((items, None));
            }
            at = scanned.last;
        }
    }

    /// The user's changes after `seq`, oldest first, at most `limit`.
    pub async fn changes_after(
        &self,
        user_id: &str,
        seq: u64,
        limit: usize,
    ) -> Result<Vec<Change>, InboxError> {
        Ok(self.table.changes_after(user_id, seq, limit).await?)
    }

    /// The sequence of the user's newest change (0 when none), or of the
    /// newest pruned one if later: where a fresh client starts, and a
    /// cursor that [`Self::resume_gap`] accepts even once the log's tail
    /// was pruned.
    pub async fn last_seq(&self, user_id: &str) -> Result<u64, InboxError> {
        let bounds = self.table.log_bounds(user_id).await?;
        Ok(bounds.last.max(bounds.pruned))
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
    pub async fn prune_changes(&self, now: Timestamp, keep: Duration) -> Result<usize, InboxError> {
        let removed = self
            .table
            .prune_changes(crate::housekeeping::cutoff(now, keep))
            .await?;
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }

    /// Every item of the user, by id (for a privacy export).
    pub async fn items_of(&self, user_id: &str) -> Result<Vec<InboxItem>, InboxError> {
        Ok(self.table.items_of(user_id).await?)
    }

    /// Up to `limit` of the user's items after the id `after` (archived
    /// ones too), by id: the pages of a privacy export.
    pub async fn items_after(
        &self,
        user_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<InboxItem>, InboxError> {
        Ok(self.table.items_after(user_id, after, limit).await?)
    }

    /// Removes everything the inbox holds about the user, durably; returns
    /// how many items were removed. Publishes nothing.
    pub async fn erase_user(&self, user_id: &str) -> Result<usize, InboxError> {
        let _in_order = self.in_order(user_id).await;
        let removed = self.table.erase_user(user_id).await?;
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }

    /// Whether a client resuming from `seq` would miss changes: some after
    /// it were pruned, or it is ahead of the log (it saw a log the user's
    /// erasure removed, whose seqs start again), so it must reload the
    /// list instead.
    pub async fn resume_gap(&self, user_id: &str, seq: u64) -> Result<bool, InboxError> {
        let bounds = self.table.log_bounds(user_id).await?;
        Ok(seq < bounds.pruned || seq > bounds.last.max(bounds.pruned))
    }
}

/// Items changed per transaction by [`InboxStore::read_all`].
pub const BULK_PAGE: usize = 200;

/// Rows one listing request examines at most, whatever its filters match
/// (`GET /v1/me/notifications`): a filter that matches nothing in a long
/// history answers an empty page with a cursor instead of reading it all.
pub const SCAN_BUDGET: usize = 2_000;

/// Rows one SQL statement of a listing examines at most.
const SCAN_WINDOW: usize = 500;

/// Where a cursor resumes: after `at`, or from the range's start (for the
/// newest-first order, "after" the highest possible id).
fn position(at: Option<String>, newest: bool) -> String {
    // Oldest first never stops before its first row (the budget is whole
    // then); the low sentinel is for completeness.
    at.unwrap_or_else(|| if newest { "\u{10FFFF}" } else { "\u{1}" }.to_owned())
}

/// What [`InboxStore::apply`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    pub changed: Vec<InboxItem>,
    /// Ids that are not the user's (or do not exist).
    pub missing: Vec<String>,
}

impl Writer {
    /// Commits whatever adds are waiting in one transaction, then the next
    /// group, until every sender is gone.
    async fn run(self, mut queue: mpsc::Receiver<QueuedAdd>) {
        while let Some(first) = queue.recv().await {
            let mut count = first.items.len();
            let mut group = vec![first];
            while count < GROUP_MAX_ITEMS {
                match queue.try_recv() {
                    Ok(next) => {
                        count += next.items.len();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            self.commit(group).await;
        }
    }

    async fn commit(&self, group: Vec<QueuedAdd>) {
        // Every user's stripe, in index order: another writer holds one
        // stripe at a time, so there is no cycle.
        let mut stripes: Vec<usize> = group.iter().map(|add| stripe_of(&add.user_id)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut held = Vec::with_capacity(stripes.len());
        for stripe in stripes {
            held.push(self.writes[stripe].lock().await);
        }
        let groups: Vec<(&str, &[InboxItem])> = group
            .iter()
            .map(|add| (add.user_id.as_str(), add.items.as_slice()))
            .collect();
        match self.table.insert_groups(&groups).await {
            Ok(results) => {
                for (add, changes) in group.iter().zip(&results) {
                    for change in changes {
                        self.hub.publish(&add.user_id, change);
                    }
                }
                drop(held);
                for (add, changes) in group.into_iter().zip(results) {
                    // A caller that went away needs no answer.
                    let _ = add.reply.send(Ok(changes));
                }
            }
            Err(error) => {
                drop(held);
                let message = error.to_string();
                for add in group {
                    let _ = add
                        .reply
                        .send(Err(StorageError::Unavailable(message.clone()).into()));
                }
            }
        }
    }
}
