use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;

use super::*;

/// An inbox on a fresh embedded database in a temporary directory.
async fn store() -> (tempfile::TempDir, InboxStore) {
    let dir = tempfile::tempdir().unwrap();
    let stores = crate::storage::Stores::open_embedded(dir.path())
        .await
        .unwrap();
    (dir, stores.inbox)
}

fn at(minute: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + minute * 60).unwrap()
}

/// Item `n`: ids sort like creation times, as delivery ids do.
fn item(n: i64, kind: &str, category: Option<&str>, title: &str) -> InboxItem {
    InboxItem {
        id: format!("0190{n:04}"),
        notification_id: format!("n{n}"),
        notification_type: kind.into(),
        category: category.map(str::to_owned),
        title: title.into(),
        body: format!("body of {title}"),
        data: json!({"n": n}),
        created_at: at(n),
        seen_at: None,
        read_at: None,
        archived_at: None,
        snoozed_until: None,
    }
}

fn ids(page: &Page) -> Vec<&str> {
    page.items.iter().map(|item| item.id.as_str()).collect()
}

fn query(limit: usize) -> InboxQuery {
    InboxQuery {
        limit,
        ..InboxQuery::default()
    }
}

/// 1..=6: comments (social) and invoices (billing); 2 and 5 read, 6
/// archived.
async fn seeded() -> (tempfile::TempDir, InboxStore) {
    let (dir, store) = store().await;
    for n in 1..=6 {
        let (kind, category) = if n % 2 == 0 {
            ("invoice", Some("billing"))
        } else {
            ("comment", Some("social"))
        };
        store
            .add("u1", &item(n, kind, category, &format!("Title {n}")))
            .await
            .unwrap();
    }
    store
        .apply(
            "u1",
            &["01900002".into(), "01900005".into()],
            Action::Read,
            at(10),
        )
        .await
        .unwrap();
    store
        .apply("u1", &["01900006".into()], Action::Archive, at(10))
        .await
        .unwrap();
    (dir, store)
}

#[tokio::test]
async fn adding_twice_keeps_one_item_and_counts_it_once() {
    let (_dir, store) = store().await;
    assert!(
        store
            .add("u1", &item(1, "comment", None, "Hi"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .add("u1", &item(1, "comment", None, "Hi"))
            .await
            .unwrap()
    );
    let counts = store.counts("u1").await.unwrap();
    assert_eq!((counts.total, counts.unread, counts.unseen), (1, 1, 1));
    assert_eq!(counts.categories[UNCATEGORISED].unread, 1);
    assert_eq!(store.changes_after("u1", 0, 100).await.unwrap().len(), 1);
}

#[tokio::test]
async fn counts_follow_every_action_and_match_a_recount() {
    let (_dir, store) = seeded().await;
    let counts = store.counts("u1").await.unwrap();
    assert_eq!(counts, store.recount("u1").await.unwrap());
    // 6 items; 2 and 5 read; 6 archived (unread but not counted).
    assert_eq!((counts.total, counts.unread), (6, 3));
    assert_eq!(counts.categories["social"].unread, 2); // 1, 3
    assert_eq!(counts.categories["billing"].unread, 1); // 4

    let steps = [
        (Action::Seen, "01900001"),
        (Action::Unread, "01900002"),
        (Action::Unarchive, "01900006"),
        (Action::Read, "01900004"),
        (Action::Delete, "01900003"),
        (Action::Archive, "01900001"),
    ];
    for (action, id) in steps {
        store
            .apply("u1", &[id.into()], action, at(20))
            .await
            .unwrap();
        assert_eq!(
            store.counts("u1").await.unwrap(),
            store.recount("u1").await.unwrap(),
            "after {action:?} {id}"
        );
    }
    let counts = store.counts("u1").await.unwrap();
    assert_eq!(counts.total, 5);
    assert_eq!(counts.unread, 2, "2 (unread again) and 6 (unarchived)");
    assert_eq!(counts.unseen, 1, "2 was seen when it was read");
}

#[tokio::test]
async fn actions_are_idempotent_and_only_touch_the_users_items() {
    let (_dir, store) = seeded().await;
    store
        .add("u2", &item(9, "comment", None, "Other"))
        .await
        .unwrap();
    let applied = store
        .apply(
            "u1",
            &["01900001".into(), "01900009".into()],
            Action::Read,
            at(30),
        )
        .await
        .unwrap();
    assert_eq!(applied.changed.len(), 1);
    assert_eq!(applied.missing, vec!["01900009".to_owned()]);
    assert!(
        store
            .get("u2", "01900009")
            .await
            .unwrap()
            .unwrap()
            .read_at
            .is_none()
    );

    let again = store
        .apply("u1", &["01900001".into()], Action::Read, at(31))
        .await
        .unwrap();
    assert!(again.changed.is_empty() && again.missing.is_empty());
    let read = store.get("u1", "01900001").await.unwrap().unwrap();
    assert_eq!(read.read_at, Some(at(30)), "the first read time is kept");
    assert_eq!(read.seen_at, Some(at(30)), "reading implies seeing");
}

#[tokio::test]
async fn lists_newest_and_oldest_with_cursors_and_no_archived_by_default() {
    let (_dir, store) = seeded().await;
    let first = store.list("u1", &query(2)).await.unwrap();
    assert_eq!(ids(&first), ["01900005", "01900004"]);
    let second = store
        .list(
            "u1",
            &InboxQuery {
                cursor: first.next_cursor,
                ..query(2)
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&second), ["01900003", "01900002"]);
    let third = store
        .list(
            "u1",
            &InboxQuery {
                cursor: second.next_cursor,
                ..query(2)
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&third), ["01900001"]);
    assert_eq!(third.next_cursor, None);

    let oldest = store
        .list(
            "u1",
            &InboxQuery {
                sort: Sort::Oldest,
                ..query(10)
            },
        )
        .await
        .unwrap();
    assert_eq!(
        ids(&oldest),
        ["01900001", "01900002", "01900003", "01900004", "01900005"]
    );
    let archived = store
        .list(
            "u1",
            &InboxQuery {
                archived: Some(true),
                ..query(10)
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&archived), ["01900006"]);
}

#[tokio::test]
async fn filters_and_search_select_exactly_the_matching_items() {
    let (_dir, store) = seeded().await;
    let list = async |q: InboxQuery| {
        store
            .list("u1", &q)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|item| item.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        list(InboxQuery {
            types: vec!["invoice".into()],
            ..query(10)
        })
        .await,
        ["01900004", "01900002"]
    );
    assert_eq!(
        list(InboxQuery {
            category: Some("social".into()),
            read: Some(false),
            ..query(10)
        })
        .await,
        ["01900003", "01900001"]
    );
    assert_eq!(
        list(InboxQuery {
            read: Some(true),
            ..query(10)
        })
        .await,
        ["01900005", "01900002"]
    );
    assert_eq!(
        list(InboxQuery {
            since: Some(at(2)),
            until: Some(at(4)),
            ..query(10)
        })
        .await,
        ["01900003", "01900002"]
    );
    assert_eq!(
        list(InboxQuery {
            search: Some("TITLE 3".into()),
            ..query(10)
        })
        .await,
        ["01900003"]
    );
    assert_eq!(
        list(InboxQuery {
            search: Some("body of title 4".into()),
            ..query(10)
        })
        .await,
        ["01900004"]
    );
}

#[tokio::test]
async fn unread_first_pages_through_unread_then_read_without_repeats() {
    let (_dir, store) = seeded().await;
    let mut seen = Vec::new();
    let mut cursor = None;
    for _ in 0..10 {
        let page = store
            .list(
                "u1",
                &InboxQuery {
                    sort: Sort::UnreadFirst,
                    cursor: cursor.clone(),
                    ..query(2)
                },
            )
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|item| item.id.clone()));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(
        seen,
        ["01900004", "01900003", "01900001", "01900005", "01900002"]
    );
    // A page the unread half fills exactly still leads on to the read half.
    let three = store
        .list(
            "u1",
            &InboxQuery {
                sort: Sort::UnreadFirst,
                ..query(3)
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&three), ["01900004", "01900003", "01900001"]);
    let rest = store
        .list(
            "u1",
            &InboxQuery {
                sort: Sort::UnreadFirst,
                cursor: three.next_cursor,
                ..query(3)
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&rest), ["01900005", "01900002"]);
    assert_eq!(rest.next_cursor, None);
}

#[tokio::test]
async fn a_cursor_not_from_this_server_is_refused() {
    let (_dir, store) = seeded().await;
    for bad in ["", "x", "z.01900001", "a."] {
        let error = store
            .list(
                "u1",
                &InboxQuery {
                    cursor: Some(bad.into()),
                    ..query(2)
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(error, InboxError::Invalid(_)), "{bad:?}: {error}");
    }
}

#[tokio::test]
async fn read_all_marks_everything_unread_once() {
    let (_dir, store) = seeded().await;
    assert_eq!(
        store.read_all("u1", Some("social"), at(40)).await.unwrap(),
        2
    );
    assert_eq!(store.counts("u1").await.unwrap().unread, 1);
    assert_eq!(store.read_all("u1", None, at(41)).await.unwrap(), 1);
    assert_eq!(store.read_all("u1", None, at(42)).await.unwrap(), 0);
    let counts = store.counts("u1").await.unwrap();
    assert_eq!(counts.unread, 0);
    assert_eq!(counts, store.recount("u1").await.unwrap());
}

#[tokio::test]
async fn changes_are_logged_in_order_and_published_live() {
    let (_dir, store) = store().await;
    let mut live = store.subscribe("u1");
    let mut other = store.subscribe("u2");
    store
        .add("u1", &item(1, "comment", None, "One"))
        .await
        .unwrap();
    store
        .add("u1", &item(2, "comment", None, "Two"))
        .await
        .unwrap();
    store
        .apply("u1", &["01900001".into()], Action::Read, at(5))
        .await
        .unwrap();

    let logged = store.changes_after("u1", 0, 100).await.unwrap();
    let kinds: Vec<ChangeKind> = logged.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [ChangeKind::Added, ChangeKind::Added, ChangeKind::Updated]
    );
    assert!(logged.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(logged[2].counts.unread, 1, "counts after the change");

    for expected in &logged {
        assert_eq!(
            live.recv().await.unwrap(),
            Live::Change(Box::new(expected.clone()))
        );
    }
    assert!(other.try_recv().is_err(), "u2 hears nothing of u1");

    // Resuming after the first change gives exactly the rest.
    let resumed = store.changes_after("u1", logged[0].seq, 100).await.unwrap();
    assert_eq!(resumed, logged[1..]);
    assert_eq!(store.last_seq("u1").await.unwrap(), logged[2].seq);
}

#[tokio::test]
async fn pruned_changes_tell_a_resuming_client_to_reload() {
    let (_dir, store) = store().await;
    store
        .add("u1", &item(1, "comment", None, "Old"))
        .await
        .unwrap();
    let first = store.last_seq("u1").await.unwrap();
    store
        .add("u1", &item(100, "comment", None, "New"))
        .await
        .unwrap();
    assert!(!store.resume_gap("u1", first).await.unwrap());
    // Keep one hour, at minute 100 + 30: item 1's change goes.
    let now = at(130);
    let removed = store
        .prune_changes(now, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert!(
        store.resume_gap("u1", 0).await.unwrap(),
        "a client from before everything"
    );
    assert!(
        !store.resume_gap("u1", first).await.unwrap(),
        "it saw the pruned change"
    );
    assert_eq!(store.changes_after("u1", first, 10).await.unwrap().len(), 1);
}
