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
    Action, Change, ChangeKind, InboxItem, InboxQuery, InboxStore, Live, Sort, Subscription,
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

on_both_engines!(
    the_same_item_added_concurrently_is_added_once,
    concurrent_writers_get_gap_free_seqs_and_exact_counts,
    a_published_change_is_in_the_log_at_its_seq,
    pages_cover_every_item_once_in_order,
    erase_removes_everything_and_publishes_nothing,
    a_reopened_database_keeps_everything,
);
