//! The conformance suite of the inbox: every case runs on SQLite and on
//! PostgreSQL (`support::Backend`) against the promises of
//! `control-plane/src/inbox/` and `control-plane/src/storage/inbox.rs`:
//! concurrent writers of one user get gap-free, increasing seqs and exact
//! counts; live changes arrive in seq order and are in the log at their
//! seq; paging; erase; and a reopened database keeps everything.

#[macro_use]
mod support;

use std::collections::HashSet;

use jiff::Timestamp;
use nudge_control_plane::inbox::{
    Action, Change, ChangeKind, InboxError, InboxItem, InboxQuery, InboxStore, Live, Sort,
    Subscription, snooze,
};
use nudge_control_plane::storage::{StorageMetrics, Stores};
use support::Backend;

fn at(minute: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + minute * 60).unwrap()
}

/// Item `n` of `writer`: ids sort like creation times, as delivery ids do.
fn item(writer: usize, n: usize) -> InboxItem {
    let minute = i64::try_from(writer * 1000 + n).unwrap();
    InboxItem {
        id: format!("0190{writer:02}{n:04}"),
        notification_id: format!("n{writer}-{n}"),
        notification_type: "comment".into(),
        category: Some(
            if n.is_multiple_of(2) {
                "social"
            } else {
                "billing"
            }
            .into(),
        ),
        title: format!("Title {writer}/{n}"),
        body: "body".into(),
        data: serde_json::json!({ "n": n }),
        created_at: at(minute),
        seen_at: None,
        read_at: None,
        archived_at: None,
        snoozed_until: None,
    }
}

/// The next change this process published; notices of other processes'
/// commits are skipped (on PostgreSQL the listener's first connect sends
/// one, "read the log", to every subscriber).
async fn next_change(live: &mut Subscription) -> Change {
    loop {
        match live.recv().await.unwrap() {
            Live::Change(change) => return *change,
            Live::Elsewhere { .. } => {}
        }
    }
}

async fn open(backend: Backend) -> (tempfile::TempDir, Stores) {
    let dir = tempfile::tempdir().unwrap();
    let stores = support::fresh_stores(backend, dir.path()).await;
    (dir, stores)
}

fn query(limit: usize, sort: Sort, cursor: Option<String>) -> InboxQuery {
    InboxQuery {
        limit,
        sort,
        cursor,
        ..InboxQuery::default()
    }
}

/// Every page of a listing, in order.
async fn all_pages(inbox: &InboxStore, user: &str, limit: usize, sort: Sort) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor = None;
    loop {
        let page = inbox.list(user, &query(limit, sort, cursor)).await.unwrap();
        ids.extend(page.items.into_iter().map(|item| item.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return ids,
        }
    }
}

async fn concurrent_writers_get_gap_free_seqs_and_exact_counts(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let inbox = stores.inbox.clone();
    let mut live = inbox.subscribe("u1");
    let writers = 6;
    let per_writer = 12;
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let inbox = inbox.clone();
            tokio::spawn(async move {
                for n in 0..per_writer {
                    assert!(inbox.add("u1", &item(writer, n)).await.unwrap());
                    if n % 3 == 0 {
                        let id = item(writer, n).id;
                        inbox.apply("u1", &[id], Action::Read, at(0)).await.unwrap();
                    }
                }
                // A batch of several items in one transaction.
                let batch: Vec<InboxItem> = (100..104).map(|n| item(writer, n)).collect();
                assert_eq!(inbox.add_many("u1", &batch).await.unwrap(), 4);
            })
        })
        .collect();
    // Another user writing at the same time keeps seqs of their own.
    for n in 0..5 {
        inbox.add("u2", &item(99, n)).await.unwrap();
    }
    for task in tasks {
        task.await.unwrap();
    }
    let expected = writers * (per_writer + per_writer / 3 + 4);
    let log = inbox.changes_after("u1", 0, 10_000).await.unwrap();
    let seqs: Vec<u64> = log.iter().map(|change| change.seq).collect();
    let gap_free: Vec<u64> = (1..=u64::try_from(expected).unwrap()).collect();
    assert_eq!(seqs, gap_free, "one user's seqs are 1, 2, 3, … in order");
    assert_eq!(inbox.last_seq("u1").await.unwrap(), seqs.len() as u64);
    assert_eq!(inbox.last_seq("u2").await.unwrap(), 5);

    let counts = inbox.counts("u1").await.unwrap();
    assert_eq!(counts, inbox.recount("u1").await.unwrap());
    assert_eq!(
        counts.total,
        u64::try_from(writers * (per_writer + 4)).unwrap()
    );
    assert_eq!(
        counts.unread,
        counts.total - (writers * per_writer / 3) as u64
    );
    assert_eq!(
        &log.last().unwrap().counts,
        &counts,
        "the log's counts end exact"
    );

    // Live: every change, in seq order, each equal to the log's.
    for logged in &log {
        assert_eq!(&next_change(&mut live).await, logged);
    }
}

async fn a_published_change_is_in_the_log_at_its_seq(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let inbox = stores.inbox.clone();
    let mut live = inbox.subscribe("u1");
    inbox.add("u1", &item(1, 1)).await.unwrap();
    inbox
        .apply("u1", &[item(1, 1).id], Action::Archive, at(5))
        .await
        .unwrap();
    inbox
        .apply("u1", &[item(1, 1).id], Action::Delete, at(6))
        .await
        .unwrap();
    for kind in [ChangeKind::Added, ChangeKind::Updated, ChangeKind::Deleted] {
        let change = next_change(&mut live).await;
        assert_eq!(change.kind, kind);
        let logged = inbox.changes_after("u1", change.seq - 1, 1).await.unwrap();
        assert_eq!(logged, vec![change]);
    }
    assert_eq!(inbox.counts("u1").await.unwrap().total, 0);
    assert!(inbox.get("u1", &item(1, 1).id).await.unwrap().is_none());
}

async fn pages_cover_every_item_once_in_order(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let inbox = stores.inbox.clone();
    let items: Vec<InboxItem> = (0..45).map(|n| item(1, n)).collect();
    assert_eq!(inbox.add_many("u1", &items).await.unwrap(), 45);
    inbox.add("u2", &item(2, 0)).await.unwrap();
    // Every 4th read, every 10th archived (out of default listings).
    let read: Vec<String> = items.iter().step_by(4).map(|i| i.id.clone()).collect();
    inbox.apply("u1", &read, Action::Read, at(0)).await.unwrap();
    let archived: Vec<String> = items.iter().step_by(10).map(|i| i.id.clone()).collect();
    inbox
        .apply("u1", &archived, Action::Archive, at(0))
        .await
        .unwrap();
    let visible: Vec<&InboxItem> = items.iter().filter(|i| !archived.contains(&i.id)).collect();

    let newest = all_pages(&inbox, "u1", 7, Sort::Newest).await;
    let mut expected: Vec<String> = visible.iter().map(|i| i.id.clone()).collect();
    expected.reverse();
    assert_eq!(newest, expected);

    let mut oldest = all_pages(&inbox, "u1", 7, Sort::Oldest).await;
    oldest.reverse();
    assert_eq!(oldest, expected);

    let unread_first = all_pages(&inbox, "u1", 6, Sort::UnreadFirst).await;
    let (unread, read_half): (Vec<String>, Vec<String>) =
        expected.iter().cloned().partition(|id| !read.contains(id));
    assert_eq!(unread_first, [unread, read_half].concat());

    // A filter SQL checks (category) and one it does not (search).
    let social = inbox
        .list(
            "u1",
            &InboxQuery {
                category: Some("social".into()),
                search: Some("TITLE 1/4".into()),
                ..query(50, Sort::Newest, None)
            },
        )
        .await
        .unwrap();
    let ids: Vec<&str> = social.items.iter().map(|i| i.id.as_str()).collect();
    // "Title 1/4" and 1/40..44; social ones are even; 40 is archived.
    assert_eq!(ids, [item(1, 44).id, item(1, 42).id, item(1, 4).id]);
}

async fn erase_removes_everything_and_publishes_nothing(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let inbox = stores.inbox.clone();
    for n in 0..5 {
        inbox.add("u1", &item(1, n)).await.unwrap();
    }
    inbox.add("u2", &item(2, 0)).await.unwrap();
    let seen = inbox.last_seq("u1").await.unwrap();
    let mut live = inbox.subscribe("u1");
    assert_eq!(inbox.erase_user("u1").await.unwrap(), 5);
    while let Ok(live) = live.try_recv() {
        assert!(
            matches!(live, Live::Elsewhere { .. }),
            "erase publishes nothing: {live:?}"
        );
    }
    assert!(inbox.items_of("u1").await.unwrap().is_empty());
    assert_eq!(inbox.counts("u1").await.unwrap(), Default::default());
    assert!(inbox.changes_after("u1", 0, 100).await.unwrap().is_empty());
    assert_eq!(inbox.last_seq("u1").await.unwrap(), 0);
    assert_eq!(inbox.items_of("u2").await.unwrap().len(), 1, "others stay");
    // A client that saw the erased log must reload, not resume.
    assert!(inbox.resume_gap("u1", seen).await.unwrap());
    // The user starts again from an empty inbox.
    inbox.add("u1", &item(1, 9)).await.unwrap();
    assert_eq!(inbox.last_seq("u1").await.unwrap(), 1);
    assert_eq!(inbox.counts("u1").await.unwrap().total, 1);
}

async fn a_reopened_database_keeps_everything(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let settings = support::fresh_settings(backend, dir.path()).await;
    let reopen = || async {
        Stores::open(&settings, dir.path(), StorageMetrics::new())
            .await
            .unwrap()
    };
    let (log, counts, items) = {
        let stores = reopen().await;
        let inbox = stores.inbox.clone();
        for n in 0..8 {
            inbox.add("u1", &item(1, n)).await.unwrap();
        }
        inbox
            .apply("u1", &[item(1, 2).id, item(1, 3).id], Action::Read, at(0))
            .await
            .unwrap();
        inbox
            .apply("u1", &[item(1, 5).id], Action::Delete, at(0))
            .await
            .unwrap();
        let state = (
            inbox.changes_after("u1", 0, 100).await.unwrap(),
            inbox.counts("u1").await.unwrap(),
            inbox.items_of("u1").await.unwrap(),
        );
        stores.close().await.unwrap();
        state
    };
    let stores = reopen().await;
    let inbox = stores.inbox.clone();
    assert_eq!(inbox.changes_after("u1", 0, 100).await.unwrap(), log);
    assert_eq!(inbox.counts("u1").await.unwrap(), counts);
    assert_eq!(inbox.items_of("u1").await.unwrap(), items);
    // Seqs go on where they stopped.
    inbox.add("u1", &item(1, 50)).await.unwrap();
    let next = inbox
        .changes_after("u1", log.last().unwrap().seq, 10)
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].seq, log.last().unwrap().seq + 1);
    let ids: HashSet<String> = inbox
        .items_of("u1")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids.len(), 8);
}

/// Adds of one item racing each other (a delivery retried while its first
/// attempt is still being written) share a group commit or not: either
/// way the item is added once and one caller is told so.
async fn the_same_item_added_concurrently_is_added_once(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let inbox = stores.inbox.clone();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let inbox = inbox.clone();
            tokio::spawn(async move { inbox.add("u1", &item(1, 1)).await.unwrap() })
        })
        .collect();
    let mut added = 0;
    for task in tasks {
        added += usize::from(task.await.unwrap());
    }
    assert_eq!(added, 1);
    assert_eq!(inbox.items_of("u1").await.unwrap().len(), 1);
    assert_eq!(inbox.last_seq("u1").await.unwrap(), 1);
    assert_eq!(inbox.counts("u1").await.unwrap().total, 1);
}

/// Snooze (`inbox::snooze`): a snoozed item leaves listings and the badge,
/// comes back unread and unseen when the waker finds it due (or at once on
/// `unsnooze`), and every step is a logged change. The waker's action is
/// checked on the locked row: an item snoozed again after the waker found
/// it stays hidden, and two wakers (two replicas on PostgreSQL) bring an
/// item back once.
async fn a_snoozed_item_is_hidden_until_it_comes_back_unread(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let settings = support::fresh_settings(backend, dir.path()).await;
    let stores = Stores::open(&settings, dir.path(), StorageMetrics::new())
        .await
        .unwrap();
    let inbox = stores.inbox.clone();
    let ids: Vec<String> = (1..=4).map(|n| item(1, n).id).collect();
    for n in 1..=4 {
        inbox.add("u1", &item(1, n)).await.unwrap();
    }
    inbox
        .apply("u1", &[ids[1].clone()], Action::Read, at(0))
        .await
        .unwrap();
    let visible = |snoozed: bool| {
        let inbox = inbox.clone();
        async move {
            let query = InboxQuery {
                limit: 50,
                snoozed: Some(snoozed),
                ..InboxQuery::default()
            };
            let page = inbox.list("u1", &query).await.unwrap();
            page.items.into_iter().map(|i| i.id).collect::<Vec<_>>()
        }
    };
    let mut live = inbox.subscribe("u1");

    // Items 1 (unread) and 2 (read) snoozed until minute 10.
    let applied = inbox
        .apply("u1", &ids[..2], Action::Snooze(at(10)), at(0))
        .await
        .unwrap();
    assert_eq!(applied.changed.len(), 2);
    for _ in 0..2 {
        let change = next_change(&mut live).await;
        assert_eq!(change.kind, ChangeKind::Updated);
        assert_eq!(change.item.unwrap().snoozed_until, Some(at(10)));
    }
    assert_eq!(visible(false).await, [ids[3].clone(), ids[2].clone()]);
    assert_eq!(visible(true).await, [ids[1].clone(), ids[0].clone()]);
    let counts = inbox.counts("u1").await.unwrap();
    assert_eq!((counts.unread, counts.total), (2, 4), "{counts:?}");
    assert_eq!(counts, inbox.recount("u1").await.unwrap());

    // Times not ahead, or too far ahead, are refused and change nothing.
    for until in [at(0), at(-5), at(60 * 24 * 367)] {
        let refused = inbox
            .apply("u1", &ids[2..3], Action::Snooze(until), at(0))
            .await;
        assert!(
            matches!(refused, Err(InboxError::Invalid(ref message)) if message.starts_with("until:")),
            "{until}: {refused:?}"
        );
    }
    assert_eq!(
        inbox
            .get("u1", &ids[2])
            .await
            .unwrap()
            .unwrap()
            .snoozed_until,
        None
    );

    // Not due yet: nothing comes back. Item 2 is moved to minute 20.
    assert_eq!(snooze::wake_due(&inbox, at(5)).await.unwrap(), 0);
    inbox
        .apply("u1", &ids[1..2], Action::Snooze(at(20)), at(5))
        .await
        .unwrap();
    next_change(&mut live).await;
    assert_eq!(snooze::wake_due(&inbox, at(10)).await.unwrap(), 1);
    let woken = next_change(&mut live).await;
    assert_eq!(woken.id, ids[0]);
    let back = woken.item.unwrap();
    assert_eq!(
        (back.snoozed_until, back.read_at, back.seen_at),
        (None, None, None)
    );
    assert_eq!(woken.counts.unread, 3);
    assert_eq!(visible(true).await, [ids[1].clone()]);

    // Cancelled early: item 2, read before its snooze, is back unread.
    let applied = inbox
        .apply("u1", &ids[1..2], Action::Unsnooze, at(11))
        .await
        .unwrap();
    assert!(!applied.changed[0].is_read());
    next_change(&mut live).await;
    assert!(visible(true).await.is_empty());
    assert_eq!(visible(false).await.len(), 4);
    let counts = inbox.counts("u1").await.unwrap();
    assert_eq!((counts.unread, counts.total), (4, 4));
    assert_eq!(counts, inbox.recount("u1").await.unwrap());

    // The waker found item 3 due, then the user snoozed it again: the
    // waker's action finds it not due on the locked row.
    inbox
        .apply("u1", &ids[2..3], Action::Snooze(at(30)), at(12))
        .await
        .unwrap();
    next_change(&mut live).await;
    let due = inbox.due_snoozes(at(30), 10).await.unwrap();
    assert_eq!(due, [("u1".to_owned(), ids[2].clone())]);
    inbox
        .apply("u1", &ids[2..3], Action::Snooze(at(40)), at(29))
        .await
        .unwrap();
    next_change(&mut live).await;
    let late = inbox
        .apply("u1", &ids[2..3], Action::WakeIfDue, at(30))
        .await
        .unwrap();
    assert!(late.changed.is_empty());
    assert_eq!(visible(true).await, [ids[2].clone()]);

    // Two wakers at once (two replicas on PostgreSQL): one change.
    let other = match backend {
        Backend::Postgres => Some(
            Stores::open(&settings, dir.path(), StorageMetrics::new())
                .await
                .unwrap(),
        ),
        Backend::Sqlite => None,
    };
    let second = other.as_ref().map_or(inbox.clone(), |s| s.inbox.clone());
    let before = inbox.last_seq("u1").await.unwrap();
    let (a, b) = tokio::join!(
        snooze::wake_due(&inbox, at(40)),
        snooze::wake_due(&second, at(40))
    );
    assert_eq!(a.unwrap() + b.unwrap(), 1);
    let log = inbox.changes_after("u1", before, 10).await.unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].id, ids[2]);
    assert_eq!(
        inbox.counts("u1").await.unwrap(),
        inbox.recount("u1").await.unwrap()
    );
}

on_both_engines!(
    a_snoozed_item_is_hidden_until_it_comes_back_unread,
    the_same_item_added_concurrently_is_added_once,
    concurrent_writers_get_gap_free_seqs_and_exact_counts,
    a_published_change_is_in_the_log_at_its_seq,
    pages_cover_every_item_once_in_order,
    erase_removes_everything_and_publishes_nothing,
    a_reopened_database_keeps_everything,
);
