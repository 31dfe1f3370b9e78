//! Throttle decisions (`control-plane/src/throttle.rs`,
//! `storage/throttles.rs`) on SQLite and on PostgreSQL: at most `limit`
//! let through per rolling window, the rest dropped or held for the digest
//! due when the window frees; a decision made once is read back on a
//! replan; every type of a category counts in a per-category throttle;
//! decisions racing each other (two replicas on PostgreSQL) still let
//! exactly `limit` through; erasing the user removes the records.

#[macro_use]
mod support;

use jiff::{SignedDuration, Timestamp};
use nudge_control_plane::storage::{StorageMetrics, Stores};
use nudge_control_plane::throttle::{
    Check, Decision, Throttle, ThrottleOver, ThrottleScope, Throttles,
};
use support::Backend;

fn at(minute: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + minute * 60).unwrap()
}

fn throttle(limit: u32, per: ThrottleScope, over: ThrottleOver) -> Throttle {
    Throttle {
        limit,
        window: "1h".into(),
        per,
        over,
    }
}

/// The check of `kind` under a single throttled type `comment` (category
/// `social`) and an unthrottled `like` of the same category.
fn check(throttle: &Throttle, kind: &str) -> Check {
    let throttles = Throttles::new([
        ("comment", Some(throttle), Some("social")),
        ("like", None, Some("social")),
    ]);
    throttles.for_type(kind, Some("social")).expect("counted")
}

async fn a_window_lets_limit_through_and_replans_read_the_decision(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let stores = support::fresh_stores(backend, dir.path()).await;
    let notifications = stores.notifications.clone();
    let drop = check(
        &throttle(3, ThrottleScope::Type, ThrottleOver::Drop),
        "comment",
    );
    let mut decided = Vec::new();
    for n in 0..5 {
        let id = format!("n{n}");
        decided.push(
            notifications
                .throttle("u1", &id, &drop, at(n))
                .await
                .unwrap(),
        );
    }
    use Decision::{Dropped, Sent};
    assert_eq!(decided, [Sent, Sent, Sent, Dropped, Dropped]);
    // Planned again later (a replay): the first decision, whatever the
    // window says now.
    assert_eq!(
        notifications
            .throttle("u1", "n3", &drop, at(120))
            .await
            .unwrap(),
        Dropped
    );
    assert_eq!(
        notifications
            .throttle("u1", "n0", &drop, at(0))
            .await
            .unwrap(),
        Sent
    );
    let recorded = notifications.throttle_decisions("n3").await.unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        (recorded[0].scope.as_str(), recorded[0].outcome.as_str()),
        ("type:comment", "dropped")
    );
    assert_eq!(recorded[0].at, at(3));
    // Another user has a window of their own.
    assert_eq!(
        notifications
            .throttle("u2", "m0", &drop, at(4))
            .await
            .unwrap(),
        Sent
    );
    // The window rolls: it is the hour before now, so at minute 60 the
    // first one (minute 0) has left it, and at 61 the second.
    assert_eq!(
        notifications
            .throttle("u1", "n5", &drop, at(59))
            .await
            .unwrap(),
        Dropped
    );
    assert_eq!(
        notifications
            .throttle("u1", "n6", &drop, at(60))
            .await
            .unwrap(),
        Sent
    );
    assert_eq!(
        notifications
            .throttle("u1", "n7", &drop, at(60))
            .await
            .unwrap(),
        Dropped
    );
    assert_eq!(
        notifications
            .throttle("u1", "n8", &drop, at(61))
            .await
            .unwrap(),
        Sent
    );

    // Over a digest throttle: held for when the oldest counted leaves.
    let digest = check(
        &throttle(1, ThrottleScope::Type, ThrottleOver::Digest),
        "comment",
    );
    assert_eq!(
        notifications
            .throttle("u3", "d0", &digest, at(0))
            .await
            .unwrap(),
        Sent
    );
    let frees = at(60);
    for n in 1..3 {
        let decision = notifications
            .throttle("u3", &format!("d{n}"), &digest, at(n * 10))
            .await
            .unwrap();
        assert_eq!(decision, Decision::Digest { at: frees }, "d{n}");
    }
    assert_eq!(
        notifications.throttle_decisions("d2").await.unwrap()[0].digest_at,
        Some(frees)
    );

    // Erasing the user removes their records.
    notifications.erase_user("u1").await.unwrap();
    assert!(
        notifications
            .throttle_decisions("n3")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        notifications.throttle_decisions("m0").await.unwrap().len(),
        1
    );
    stores.close().await.unwrap();
}

async fn a_category_throttle_counts_every_type_of_the_category(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let stores = support::fresh_stores(backend, dir.path()).await;
    let notifications = stores.notifications.clone();
    let per_category = throttle(2, ThrottleScope::Category, ThrottleOver::Drop);
    let (comment, like) = (
        check(&per_category, "comment"),
        check(&per_category, "like"),
    );
    // `like` has no throttle: always let through, and counted.
    for n in 0..3 {
        let decision = notifications
            .throttle("u1", &format!("like{n}"), &like, at(n))
            .await
            .unwrap();
        assert_eq!(decision, Decision::Sent);
    }
    let decision = notifications
        .throttle("u1", "comment0", &comment, at(5))
        .await
        .unwrap();
    assert_eq!(
        decision,
        Decision::Dropped,
        "two likes filled the category's window"
    );
    stores.close().await.unwrap();
}

/// Decisions for one user racing each other: on PostgreSQL from two
/// stores (two replicas), on SQLite from one (one process writes).
async fn racing_decisions_let_exactly_limit_through(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let settings = support::fresh_settings(backend, dir.path()).await;
    let first = Stores::open(&settings, dir.path(), StorageMetrics::new())
        .await
        .unwrap();
    let second = match backend {
        Backend::Postgres => Some(
            Stores::open(&settings, dir.path(), StorageMetrics::new())
                .await
                .unwrap(),
        ),
        Backend::Sqlite => None,
    };
    let limited = check(
        &throttle(3, ThrottleScope::Type, ThrottleOver::Drop),
        "comment",
    );
    let tasks: Vec<_> = (0..12)
        .map(|n| {
            let store = match (&second, n % 2) {
                (Some(second), 1) => second.notifications.clone(),
                _ => first.notifications.clone(),
            };
            let limited = limited.clone();
            tokio::spawn(async move {
                store
                    .throttle(
                        "u1",
                        &format!("n{n}"),
                        &limited,
                        at(0) + SignedDuration::from_millis(n),
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut sent = 0;
    for task in tasks {
        sent += usize::from(task.await.unwrap() == Decision::Sent);
    }
    assert_eq!(sent, 3);
}

on_both_engines!(
    a_window_lets_limit_through_and_replans_read_the_decision,
    a_category_throttle_counts_every_type_of_the_category,
    racing_decisions_let_exactly_limit_through,
);
