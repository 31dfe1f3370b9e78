//! Bounded scans and streamed exports (issue 15, item 7), over the real
//! HTTP router on both storage engines:
//! * a filter that matches nothing in a long history (5,000 events or
//!   inbox items) answers after a bounded number of rows with a
//!   `next_cursor`, and paging on reaches the end; a filter that matches
//!   a few gives exactly those, in order, across short and empty pages;
//! * an empty `?cursor=` is the first page, a bad one is `400` naming
//!   `cursor`;
//! * exports (the privacy export, the inbox and activity exports) are one
//!   valid document with everything, produced as many body chunks, none
//!   of which holds a large part of the document: memory is bounded by a
//!   page, not by the history.

#[macro_use]
mod support;

use std::collections::BTreeSet;

use axum::body::Body;
use http_body::Body as _;
use jiff::Timestamp;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::Backend;

use nudge_control_plane::event::{Event, EventBody, JsonObject};
use nudge_control_plane::http::user_auth::{TokenPolicy, UserTokenSecret};
use nudge_control_plane::http::{HttpState, router};
use nudge_control_plane::inbox::{InboxItem, SCAN_BUDGET};
use nudge_control_plane::privacy::export::PAGE as EXPORT_PAGE;

const SECRET: &str = "the-app-backend-shares-this-32-byte-secret";
const ADMIN: &str = "bounded-scans-admin-token-0123456789";
/// The long history: many times the per-request budget.
const HISTORY: usize = 5_000;

struct Server {
    _dir: tempfile::TempDir,
    base: String,
    state: HttpState,
    client: reqwest::Client,
}

fn secret() -> UserTokenSecret {
    SECRET.parse().unwrap()
}

fn token_for(user: &str) -> String {
    let exp = Timestamp::now().as_second() + 600;
    secret().sign(&json!({"sub": user, "exp": exp}))
}

impl Server {
    async fn start(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stores = support::fresh_stores(backend, dir.path()).await;
        let state = HttpState {
            user_tokens: Some(secret().with_policy(TokenPolicy::default())),
            admin_token: Some(ADMIN.parse().unwrap()),
            ..HttpState::standalone(&stores).unwrap()
        };
        let (base, _) = support::serve(state.clone()).await;
        Server {
            _dir: dir,
            base,
            state,
            client: reqwest::Client::new(),
        }
    }

    /// `GET path` as `user`: status and JSON body.
    async fn get(&self, user: &str, path: &str) -> (StatusCode, Value) {
        let reply = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token_for(user))
            .send()
            .await
            .unwrap();
        let status = reply.status();
        let text = reply.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn ok(&self, user: &str, path: &str) -> Value {
        let (status, body) = self.get(user, path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// Every page of `path` (a query string without `cursor`), following
    /// `next_cursor`: the pages' items under `key`.
    async fn pages(&self, user: &str, path: &str, key: &str) -> Vec<Vec<Value>> {
        let mut pages = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let url = match &cursor {
                Some(cursor) => format!("{path}&cursor={cursor}"),
                None => path.to_owned(),
            };
            let page = self.ok(user, &url).await;
            pages.push(page[key].as_array().unwrap().clone());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return pages,
            }
            assert!(pages.len() <= HISTORY, "paging never ends");
        }
    }

    /// `path` through the router in this process, as an admin (`admin`)
    /// or as `u1`: the body's chunks as the server produced them.
    async fn chunks(&self, path: &str, admin: bool) -> Vec<bytes::Bytes> {
        let token = if admin {
            ADMIN.to_owned()
        } else {
            token_for("u1")
        };
        let request = axum::http::Request::get(path)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let mut app = router(self.state.clone());
        let response = tower::Service::call(&mut app, request).await.unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        let mut body = response.into_body();
        let mut chunks = Vec::new();
        while let Some(frame) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
        {
            if let Ok(data) = frame.unwrap().into_data() {
                chunks.push(data);
            }
        }
        chunks
    }

    /// `HISTORY` tracked events of u1: `view` of product `p{n}`, except
    /// every 1000th, a `purchase`; and one of u2.
    async fn seed_events(&self) {
        let events: Vec<Event> = (0..HISTORY)
            .map(|n| {
                let name = if n % 1000 == 999 { "purchase" } else { "view" };
                event(&format!("e{n:05}"), "u1", name, &format!("p{n}"))
            })
            .collect();
        for batch in events.chunks(500) {
            self.state.store.ingest(batch.to_vec()).await.unwrap();
        }
        self.state
            .store
            .ingest(vec![event("other", "u2", "purchase", "p1")])
            .await
            .unwrap();
    }

    /// `HISTORY` inbox items of u1, ids in time order; every 997th has
    /// "needle" in its body and type `rare`.
    async fn seed_inbox(&self) {
        let items: Vec<InboxItem> = (0..HISTORY).map(item).collect();
        for batch in items.chunks(1000) {
            self.state.inbox.add_many("u1", batch).await.unwrap();
        }
    }
}

fn event(id: &str, user: &str, name: &str, product: &str) -> Event {
    let mut properties = JsonObject::new();
    properties.insert("product_id".into(), json!(product));
    Event {
        id: id.into(),
        user_id: Some(user.into()),
        anonymous_id: None,
        timestamp: None,
        sent_at: None,
        received_at: None,
        ingested_at: Timestamp::from_second(1_800_000_000).unwrap(),
        agent_id: "agent".into(),
        write_key: None,
        context: JsonObject::new(),
        integrations: JsonObject::new(),
        body: EventBody::Track {
            event: name.into(),
            properties,
        },
    }
}

fn needle(n: usize) -> bool {
    n.is_multiple_of(997)
}

fn item(n: usize) -> InboxItem {
    InboxItem {
        id: format!("0190a000-0000-7000-8000-{n:012}"),
        notification_id: format!("n{n}"),
        notification_type: if needle(n) { "rare" } else { "comment" }.into(),
        category: Some("social".into()),
        title: format!("Item {n}"),
        body: if needle(n) {
            "a needle in the haystack".into()
        } else {
            format!("body {n}")
        },
        data: json!({ "n": n }),
        created_at: Timestamp::from_second(1_800_000_000 + i64::try_from(n).unwrap()).unwrap(),
        seen_at: None,
        read_at: None,
        archived_at: None,
        snoozed_until: None,
    }
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The activity feed's budget: `SCAN_BUDGET` of `http::me_activity` (a
/// private module), as the README documents it.
const ACTIVITY_BUDGET: usize = 2_000;

/// Pages a scan of the whole history takes at `budget` rows per request.
fn budget_pages(budget: usize) -> usize {
    HISTORY.div_ceil(budget)
}

async fn an_activity_filter_that_matches_nothing_is_scanned_in_bounded_pages(backend: Backend) {
    let server = Server::start(backend).await;
    server.seed_events().await;

    let first = server.ok("u1", "/v1/me/activity?event=nothing").await;
    assert_eq!(first["activity"], json!([]));
    assert!(
        first["next_cursor"].is_string(),
        "the scan stopped at its budget, not at the end: {first}"
    );
    let pages = server
        .pages("u1", "/v1/me/activity?event=nothing&limit=200", "activity")
        .await;
    assert!(pages.iter().all(Vec::is_empty));
    assert_eq!(
        pages.len(),
        budget_pages(ACTIVITY_BUDGET),
        "one page per budget of events"
    );

    // A filter matching a few: exactly those, in order, over short pages.
    let expected: Vec<String> = (0..HISTORY)
        .filter(|n| n % 1000 == 999)
        .map(|n| format!("e{n:05}"))
        .collect();
    for query in [
        "event=purchase&limit=2",
        "event=purchase&kind=track&limit=200",
    ] {
        let pages = server
            .pages("u1", &format!("/v1/me/activity?{query}"), "activity")
            .await;
        let found: Vec<String> = pages.iter().flat_map(|page| ids(page)).collect();
        assert_eq!(found, expected, "{query}");
    }
    // A filter on properties (never in SQL) that matches one.
    let pages = server
        .pages("u1", "/v1/me/activity?resource=p4321", "activity")
        .await;
    let found: Vec<String> = pages.iter().flat_map(|page| ids(page)).collect();
    assert_eq!(found, ["e04321"]);
    // Unfiltered pages are full, and together the whole history.
    let pages = server
        .pages("u1", "/v1/me/activity?limit=200", "activity")
        .await;
    assert!(
        pages[..pages.len() - 1]
            .iter()
            .all(|page| page.len() == 200)
    );
    assert_eq!(pages.iter().map(Vec::len).sum::<usize>(), HISTORY);

    let summary = server.ok("u1", "/v1/me/activity/summary").await;
    assert_eq!(summary["total"], HISTORY);
    assert_eq!(summary["by_event"]["purchase"], 5);
}

async fn an_inbox_filter_that_matches_nothing_is_scanned_in_bounded_pages(backend: Backend) {
    let server = Server::start(backend).await;
    server.seed_inbox().await;

    // In SQL (category) and after it (q): both stop at the budget.
    for filter in ["category=nothing", "q=nothing+at+all", "type=nothing"] {
        let first = server
            .ok("u1", &format!("/v1/me/notifications?{filter}"))
            .await;
        assert_eq!(first["items"], json!([]), "{filter}");
        assert!(first["next_cursor"].is_string(), "{filter}: {first}");
        let pages = server
            .pages("u1", &format!("/v1/me/notifications?{filter}"), "items")
            .await;
        assert!(pages.iter().all(Vec::is_empty), "{filter}");
        assert_eq!(pages.len(), budget_pages(SCAN_BUDGET), "{filter}");
    }

    let newest: Vec<String> = (0..HISTORY)
        .rev()
        .filter(|n| needle(*n))
        .map(|n| item(n).id)
        .collect();
    let oldest: Vec<String> = newest.iter().rev().cloned().collect();
    for (query, expected) in [
        ("q=needle&limit=2", &newest),
        ("type=rare&limit=3", &newest),
        ("q=needle&type=rare&sort=oldest&limit=2", &oldest),
        ("q=NEEDLE&sort=unread_first&limit=200", &newest),
    ] {
        let pages = server
            .pages("u1", &format!("/v1/me/notifications?{query}"), "items")
            .await;
        let found: Vec<String> = pages.iter().flat_map(|page| ids(page)).collect();
        assert_eq!(&found, expected, "{query}");
    }

    // Unread first across both halves, a few of them read.
    let read: Vec<String> = newest.iter().step_by(2).cloned().collect();
    server
        .state
        .inbox
        .apply(
            "u1",
            &read,
            nudge_control_plane::inbox::Action::Read,
            Timestamp::now(),
        )
        .await
        .unwrap();
    let unread: Vec<String> = newest
        .iter()
        .filter(|id| !read.contains(id))
        .cloned()
        .collect();
    let expected: Vec<String> = unread.into_iter().chain(read.iter().cloned()).collect();
    let pages = server
        .pages(
            "u1",
            "/v1/me/notifications?q=needle&sort=unread_first&limit=2",
            "items",
        )
        .await;
    let found: Vec<String> = pages.iter().flat_map(|page| ids(page)).collect();
    assert_eq!(found, expected);
    // Every page examined a bounded number of items: the unread half and
    // the read half each take their budget's pages (one may be shared).
    assert!(
        pages.len() <= 2 * budget_pages(SCAN_BUDGET) + expected.len(),
        "{}",
        pages.len()
    );
}

async fn an_empty_cursor_is_the_first_page_and_a_bad_one_is_400(backend: Backend) {
    let server = Server::start(backend).await;
    server.seed_inbox().await;
    server.seed_events().await;
    for (path, key) in [
        ("/v1/me/notifications?limit=5", "items"),
        ("/v1/me/activity?limit=5", "activity"),
    ] {
        let first = server.ok("u1", path).await;
        let empty = server.ok("u1", &format!("{path}&cursor=")).await;
        assert_eq!(
            ids(first[key].as_array().unwrap()),
            ids(empty[key].as_array().unwrap())
        );
        for bad in ["bogus", "x.1", "-1"] {
            let (status, body) = server.get("u1", &format!("{path}&cursor={bad}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {bad}: {body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains("cursor"), "{message}");
        }
    }
}

/// The body's chunks: many, and none holding a large part of it.
fn assert_streamed(chunks: &[bytes::Bytes], at_least: usize) {
    let total: usize = chunks.iter().map(bytes::Bytes::len).sum();
    let largest = chunks.iter().map(bytes::Bytes::len).max().unwrap_or(0);
    assert!(
        chunks.len() >= at_least,
        "{} chunks, expected one per page read at least ({at_least})",
        chunks.len()
    );
    assert!(
        largest * 5 < total,
        "a chunk of {largest} bytes out of {total}: not bounded by a page"
    );
}

fn joined(chunks: &[bytes::Bytes]) -> Vec<u8> {
    chunks
        .iter()
        .flat_map(|chunk| chunk.iter().copied())
        .collect()
}

async fn exports_of_a_large_user_are_streamed_and_complete(backend: Backend) {
    let server = Server::start(backend).await;
    server.seed_events().await;
    server.seed_inbox().await;

    let chunks = server.chunks("/v1/admin/users/u1/export", true).await;
    assert_streamed(&chunks, HISTORY / EXPORT_PAGE);
    let export: Value = serde_json::from_slice(&joined(&chunks)).expect("one JSON document");
    assert_eq!(export["user_id"], "u1");
    let events = export["events"].as_array().unwrap();
    let expected: Vec<String> = (0..HISTORY).map(|n| format!("e{n:05}")).collect();
    assert_eq!(ids(events), expected, "every event, in ingest order");
    let inbox = export["inbox"].as_array().unwrap();
    let expected: BTreeSet<String> = (0..HISTORY).map(|n| item(n).id).collect();
    assert_eq!(ids(inbox).into_iter().collect::<BTreeSet<_>>(), expected);
    assert_eq!(inbox.len(), HISTORY);
    assert!(export["erased_at"].is_null());
    assert!(export["devices"].is_array());

    let chunks = server
        .chunks("/v1/me/activity/export?format=json", false)
        .await;
    assert_streamed(&chunks, HISTORY / 500);
    let activity: Value = serde_json::from_slice(&joined(&chunks)).unwrap();
    assert_eq!(activity.as_array().unwrap().len(), HISTORY);
    let chunks = server
        .chunks("/v1/me/activity/export?format=csv", false)
        .await;
    assert_streamed(&chunks, HISTORY / 500);
    let csv = String::from_utf8(joined(&chunks)).unwrap();
    assert_eq!(csv.lines().count(), HISTORY + 1, "a header and a row each");

    let chunks = server
        .chunks("/v1/me/notifications/export?format=json", false)
        .await;
    assert_streamed(&chunks, HISTORY / 200);
    let items: Value = serde_json::from_slice(&joined(&chunks)).unwrap();
    assert_eq!(
        ids(items.as_array().unwrap())
            .into_iter()
            .collect::<BTreeSet<_>>(),
        expected
    );
    // A filter matching a few: the export follows the cursor over the
    // empty pages of the bounded scan to the end.
    let chunks = server
        .chunks("/v1/me/notifications/export?format=csv&q=needle", false)
        .await;
    let csv = String::from_utf8(joined(&chunks)).unwrap();
    let needles = (0..HISTORY).filter(|n| needle(*n)).count();
    assert_eq!(csv.lines().count(), needles + 1, "{csv}");
}

on_both_engines!(
    an_activity_filter_that_matches_nothing_is_scanned_in_bounded_pages,
    an_inbox_filter_that_matches_nothing_is_scanned_in_bounded_pages,
    an_empty_cursor_is_the_first_page_and_a_bad_one_is_400,
    exports_of_a_large_user_are_streamed_and_complete,
);
