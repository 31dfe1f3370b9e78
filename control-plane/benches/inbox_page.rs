//! Benchmark: the first page of the inbox for a user with 100,000
//! notifications, over real HTTP (the control plane's router on a loopback
//! port, the embedded SQLite store), p50 and p99 per query shape, next to a baseline route
//! that does no inbox work (`/healthz`) measured in the same run.
//!
//! Run: `cargo bench -p nudge-control-plane --bench inbox_page`
//! (`-- --items N --requests N` to change the sizes). Prints figures; it
//! asserts nothing about speed.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use nudge_control_plane::http::user_auth::UserTokenSecret;
use nudge_control_plane::http::{HttpState, router};
use nudge_control_plane::inbox::InboxItem;
use nudge_control_plane::storage::Stores;
use serde_json::json;

const USER: &str = "heavy-user";
const SECRET: &str = "benchmark-secret-of-at-least-32-bytes";

#[path = "support/args.rs"]
mod args;
use args::arg;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

#[tokio::main]
async fn main() {
    let items = arg("--items", 100_000);
    let requests = arg("--requests", 300);
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open_embedded(dir.path()).await.unwrap();
    let secret: UserTokenSecret = SECRET.parse().unwrap();
    let state = HttpState {
        user_tokens: Some(secret.clone()),
        ..HttpState::standalone(&stores).unwrap()
    };

    let fill = Instant::now();
    let start = Timestamp::now().as_second() - items as i64;
    // Added in batches of 1,000 (one transaction each): the fill is set-up,
    // not what is measured.
    let mut batch = Vec::with_capacity(1_000);
    for n in 0..items {
        let kind = if n % 3 == 0 { "invoice" } else { "comment" };
        let item = InboxItem {
            // Time-ordered like real delivery ids.
            id: format!("{:016x}-{n:08}", start + n as i64),
            notification_id: format!("n{n}"),
            notification_type: kind.into(),
            category: Some(if n % 3 == 0 { "billing" } else { "social" }.into()),
            title: format!("{kind} number {n}"),
            body: format!("Something happened, item {n}"),
            data: json!({"n": n}),
            created_at: Timestamp::from_second(start + n as i64).unwrap(),
            seen_at: None,
            read_at: (n % 2 == 0).then(Timestamp::now),
            archived_at: None,
            snoozed_until: None,
        };
        batch.push(item);
        if batch.len() == 1_000 || n + 1 == items {
            state.inbox.add_many(USER, &batch).await.unwrap();
            batch.clear();
        }
    }
    let filled = fill.elapsed();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
    let token = secret.sign(&json!({"sub": USER, "exp": Timestamp::now().as_second() + 3600}));
    let client = reqwest::Client::new();

    println!(
        "inbox first page: {items} notifications for one user (filled in {filled:.1?}), {requests} requests each, sequential"
    );
    println!(
        "{:<48} {:>10} {:>10} {:>10}",
        "query", "p50", "p99", "items"
    );
    let shapes = [
        ("/healthz (baseline: no inbox work)", "/healthz"),
        ("newest, limit 20", "/v1/me/notifications?limit=20"),
        (
            "unread first, limit 20",
            "/v1/me/notifications?sort=unread_first&limit=20",
        ),
        (
            "category=billing&read=false, limit 20",
            "/v1/me/notifications?category=billing&read=false&limit=20",
        ),
        ("counts (badge)", "/v1/me/notifications/counts"),
    ];
    for (label, path) in shapes {
        let url = format!("{base}{path}");
        let mut times = Vec::with_capacity(requests);
        let mut returned = 0;
        for _ in 0..requests {
            let began = Instant::now();
            let reply = client.get(&url).bearer_auth(&token).send().await.unwrap();
            assert!(reply.status().is_success(), "{path}: {}", reply.status());
            let body = reply.bytes().await.unwrap();
            times.push(began.elapsed());
            if path.contains("notifications?") {
                let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
                returned = page["items"].as_array().map_or(0, Vec::len);
            }
        }
        times.sort();
        println!(
            "{label:<48} {:>10.2?} {:>10.2?} {:>10}",
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            returned
        );
    }
}
