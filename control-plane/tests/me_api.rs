//! The end-user API under `/v1/me/` over real HTTP (the control plane's
//! router on a loopback port, real sled stores):
//! * every route refuses a missing, expired or wrongly signed token with
//!   `401`, and another user's ids with `404`;
//! * listing filters, search, sorting, pagination, bulk actions and export
//!   return exactly the right notifications;
//! * the activity feed shows the user's own events only, without the
//!   application's secrets.

use jiff::Timestamp;
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use nudge_control_plane::event::{Event, EventBody};
use nudge_control_plane::http::HttpState;
use nudge_control_plane::http::user_auth::{TokenPolicy, UserTokenSecret};
use nudge_control_plane::inbox::{InboxItem, InboxStore};
use nudge_control_plane::storage::{EventStore, Stores};

mod support;

const SECRET: &str = "the-app-backend-shares-this-32-byte-secret";

struct Server {
    _dir: tempfile::TempDir,
    base: String,
    inbox: InboxStore,
    store: EventStore,
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
    async fn start() -> Self {
        Self::start_with(TokenPolicy::default()).await
    }

    /// A server whose user tokens must follow `policy`.
    async fn start_with(policy: TokenPolicy) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::open_embedded(dir.path()).await.unwrap();
        let store: EventStore = stores.events.clone();
        let state = HttpState {
            user_tokens: Some(secret().with_policy(policy)),
            ..HttpState::standalone(&stores).unwrap()
        };
        let inbox = state.inbox.clone();
        let (base, _) = support::serve(state).await;
        Server {
            _dir: dir,
            base,
            inbox,
            store,
            client: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value, String) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply = request.send().await.unwrap();
        let status = reply.status();
        let text = reply.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        )
    }

    async fn get(&self, user: &str, path: &str) -> Value {
        let (status, body, text) = self
            .call(Method::GET, path, Some(&token_for(user)), None)
            .await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {text}");
        body
    }

    async fn post(&self, user: &str, path: &str, body: Value) -> Value {
        let (status, body, text) = self
            .call(Method::POST, path, Some(&token_for(user)), Some(body))
            .await;
        assert_eq!(status, StatusCode::OK, "POST {path}: {text}");
        body
    }

    /// The ids (their `n`) of u1's listing with `query`.
    async fn list(&self, query: &str) -> Vec<i64> {
        ids_of(
            &self
                .get("u1", &format!("/v1/me/notifications?{query}"))
                .await,
        )
    }

    /// Ten items for `u1`: n = 1..=10, `invoice` (billing) when even,
    /// `comment` (social) when odd; and one item for `u2`.
    async fn seed(&self) {
        for n in 1..=10 {
            let (kind, category) = if n % 2 == 0 {
                ("invoice", "billing")
            } else {
                ("comment", "social")
            };
            self.inbox
                .add("u1", &item(n, kind, category))
                .await
                .unwrap();
        }
        self.inbox
            .add("u2", &item(99, "comment", "social"))
            .await
            .unwrap();
    }
}

fn id(n: i64) -> String {
    format!("0190a000-0000-7000-8000-{n:012}")
}

fn item(n: i64, kind: &str, category: &str) -> InboxItem {
    InboxItem {
        id: id(n),
        notification_id: format!("n{n}"),
        notification_type: kind.into(),
        category: Some(category.into()),
        title: format!("{kind} number {n}"),
        body: if n == 7 {
            "contains the word pineapple".into()
        } else {
            format!("body {n}")
        },
        data: json!({}),
        created_at: Timestamp::from_second(1_800_000_000 + n * 3600).unwrap(),
        seen_at: None,
        read_at: None,
        archived_at: None,
        snoozed_until: None,
    }
}

fn ids_of(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            item["id"].as_str().unwrap()[24..]
                .trim_start_matches('0')
                .parse()
                .unwrap()
        })
        .collect()
}

/// Every `/v1/me` route, with a body where it needs one. `{id}` is an
/// inbox item of u2's, `{device}` a device of u2's.
fn routes() -> Vec<(Method, &'static str, Option<Value>)> {
    vec![
        (Method::GET, "/v1/me/notifications", None),
        (Method::GET, "/v1/me/notifications/counts", None),
        (Method::GET, "/v1/me/notifications/export?format=csv", None),
        (Method::GET, "/v1/me/notifications/{id}", None),
        (Method::POST, "/v1/me/notifications/{id}/read", None),
        (Method::POST, "/v1/me/notifications/{id}/unread", None),
        (Method::POST, "/v1/me/notifications/{id}/seen", None),
        (Method::POST, "/v1/me/notifications/{id}/archive", None),
        (Method::POST, "/v1/me/notifications/{id}/unarchive", None),
        (Method::POST, "/v1/me/notifications/{id}/unsnooze", None),
        (
            Method::POST,
            "/v1/me/notifications/{id}/snooze",
            Some(
                json!({"until": (Timestamp::now() + jiff::SignedDuration::from_hours(1)).to_string()}),
            ),
        ),
        (Method::DELETE, "/v1/me/notifications/{id}", None),
        (
            Method::POST,
            "/v1/me/notifications/bulk",
            Some(json!({"ids": ["x"], "action": "read"})),
        ),
        (
            Method::POST,
            "/v1/me/notifications/read-all",
            Some(json!({})),
        ),
        (Method::GET, "/v1/me/devices", None),
        (
            Method::POST,
            "/v1/me/devices",
            Some(json!({"platform": "fcm", "token": "tok-me"})),
        ),
        (Method::GET, "/v1/me/devices/{device}", None),
        (Method::DELETE, "/v1/me/devices/{device}", None),
        (Method::GET, "/v1/me/activity", None),
        (Method::GET, "/v1/me/activity/summary", None),
        (Method::GET, "/v1/me/activity/export", None),
    ]
}

#[tokio::test]
async fn every_route_refuses_missing_expired_and_forged_tokens() {
    let server = Server::start().await;
    server.seed().await;
    let now = Timestamp::now().as_second();
    let expired = secret().sign(&json!({"sub": "u1", "exp": now - 3600}));
    let forged: UserTokenSecret = "somebody-else-s-secret-of-32-bytes!".parse().unwrap();
    let forged = forged.sign(&json!({"sub": "u1", "exp": now + 600}));
    let no_exp = secret().sign(&json!({"sub": "u1"}));
    // Longer than the default maximum of 24 h, with and without iat.
    let too_long = secret().sign(&json!({"sub": "u1", "iat": now, "exp": now + 2 * 86400}));
    let too_long_no_iat = secret().sign(&json!({"sub": "u1", "exp": now + 30 * 86400}));
    // A stream ticket opens the stream and nothing else.
    let ticket = secret().stream_ticket("u1", now);
    for (method, path, body) in routes() {
        let path = path.replace("{id}", &id(99)).replace("{device}", "d");
        for (label, token) in [
            ("missing", None),
            ("expired", Some(expired.as_str())),
            ("forged", Some(forged.as_str())),
            ("without exp", Some(no_exp.as_str())),
            ("too long-lived", Some(too_long.as_str())),
            ("too long-lived (no iat)", Some(too_long_no_iat.as_str())),
            ("stream ticket", Some(ticket.as_str())),
        ] {
            let (status, reply, text) = server
                .call(method.clone(), &path, token, body.clone())
                .await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with a {label} token: {text}"
            );
            assert_eq!(reply["error"]["code"], "invalid_token", "{text}");
        }
    }
    // Nothing was changed by any of those calls.
    assert_eq!(server.inbox.counts("u1").await.unwrap().unread, 10);
    assert_eq!(server.inbox.counts("u2").await.unwrap().unread, 1);
}

#[tokio::test]
async fn audience_and_issuer_are_enforced_when_configured() {
    let server = Server::start_with(TokenPolicy {
        audience: Some("nudge-api".to_owned()),
        issuer: Some("https://app.example".to_owned()),
        ..TokenPolicy::default()
    })
    .await;
    server.seed().await;
    let exp = Timestamp::now().as_second() + 600;
    let iss = "https://app.example";
    let cases = [
        (
            json!({"sub": "u1", "exp": exp, "aud": "nudge-api", "iss": iss}),
            None,
        ),
        (
            json!({"sub": "u1", "exp": exp, "aud": ["x", "nudge-api"], "iss": iss}),
            None,
        ),
        (json!({"sub": "u1", "exp": exp, "iss": iss}), Some("aud")),
        (
            json!({"sub": "u1", "exp": exp, "aud": "other-api", "iss": iss}),
            Some("aud"),
        ),
        (
            json!({"sub": "u1", "exp": exp, "aud": "nudge-api"}),
            Some("iss"),
        ),
        (
            json!({"sub": "u1", "exp": exp, "aud": "nudge-api", "iss": "https://evil.example"}),
            Some("iss"),
        ),
    ];
    for (claims, refused) in cases {
        let token = secret().sign(&claims);
        let (status, reply, text) = server
            .call(
                Method::GET,
                "/v1/me/notifications/counts",
                Some(&token),
                None,
            )
            .await;
        match refused {
            None => assert_eq!(status, StatusCode::OK, "{claims}: {text}"),
            Some(claim) => {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{claims}: {text}");
                assert_eq!(reply["error"]["code"], "invalid_token", "{text}");
                let message = reply["error"]["message"].as_str().unwrap();
                assert!(message.contains(claim), "{claims}: {message}");
            }
        }
    }
}

#[tokio::test]
async fn another_users_ids_are_not_found_and_left_alone() {
    let server = Server::start().await;
    server.seed().await;
    // u2 owns item 99 and a device.
    let (status, device, _) = server
        .call(
            Method::POST,
            "/v1/me/devices",
            Some(&token_for("u2")),
            Some(json!({"platform": "fcm", "token": "u2-phone"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let device_id = device["id"].as_str().unwrap().to_owned();

    let u1 = token_for("u1");
    for (method, path, body) in routes() {
        if !path.contains("{id}") && !path.contains("{device}") {
            continue;
        }
        let path = path
            .replace("{id}", &id(99))
            .replace("{device}", &device_id);
        let (status, _, text) = server.call(method.clone(), &path, Some(&u1), body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {text}");
    }
    let bulk = server
        .post(
            "u1",
            "/v1/me/notifications/bulk",
            json!({"ids": [id(99)], "action": "delete"}),
        )
        .await;
    assert_eq!(bulk["changed"], json!([]));
    assert_eq!(bulk["not_found"], json!([id(99)]));

    let theirs = server.inbox.get("u2", &id(99)).await.unwrap().unwrap();
    assert!(theirs.read_at.is_none() && theirs.archived_at.is_none());
    let devices = server.get("u2", "/v1/me/devices").await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1);
    let mine = server.get("u1", "/v1/me/notifications?limit=200").await;
    assert!(!ids_of(&mine).contains(&99), "u2's item in u1's list");
}

#[tokio::test]
async fn filters_search_sorting_and_pagination_are_exact() {
    let server = Server::start().await;
    server.seed().await;
    // 2, 4, 5 read; 9 archived.
    server
        .post(
            "u1",
            "/v1/me/notifications/bulk",
            json!({"ids": [id(2), id(4), id(5)], "action": "read"}),
        )
        .await;
    server
        .post(
            "u1",
            &format!("/v1/me/notifications/{}/archive", id(9)),
            json!({}),
        )
        .await;

    assert_eq!(server.list("").await, [10, 8, 7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(server.list("sort=oldest&limit=3").await, [1, 2, 3]);
    assert_eq!(server.list("type=invoice").await, [10, 8, 6, 4, 2]);
    assert_eq!(server.list("category=social&read=false").await, [7, 3, 1]);
    assert_eq!(server.list("read=true").await, [5, 4, 2]);
    assert_eq!(server.list("archived=true").await, [9]);
    assert_eq!(server.list("q=PINEAPPLE").await, [7]);
    assert_eq!(server.list("q=invoice%20number%201").await, [10]);
    let start = Timestamp::from_second(1_800_000_000 + 3 * 3600).unwrap();
    let end = Timestamp::from_second(1_800_000_000 + 6 * 3600).unwrap();
    let window = server
        .get(
            "u1",
            &format!("/v1/me/notifications?since={start}&until={end}"),
        )
        .await;
    assert_eq!(
        ids_of(&window),
        [5, 4, 3],
        "since inclusive, until exclusive"
    );
    assert_eq!(
        server.list("sort=unread_first").await,
        [10, 8, 7, 6, 3, 1, 5, 4, 2]
    );

    // Paging by 2 in every sort visits each item once, in order.
    for (sort, expected) in [
        ("newest", vec![10, 8, 7, 6, 5, 4, 3, 2, 1]),
        ("oldest", vec![1, 2, 3, 4, 5, 6, 7, 8, 10]),
        ("unread_first", vec![10, 8, 7, 6, 3, 1, 5, 4, 2]),
    ] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/me/notifications?limit=2&sort={sort}");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let page = server.get("u1", &path).await;
            seen.extend(ids_of(&page));
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen, expected, "paging {sort}");
    }

    let counts = server.get("u1", "/v1/me/notifications/counts").await;
    assert_eq!(counts["unread"], 6);
    assert_eq!(counts["categories"]["billing"]["unread"], 3);
    assert_eq!(counts["categories"]["social"]["unread"], 3);

    // Bulk archive and delete, then read-all of one category.
    let bulk = server
        .post(
            "u1",
            "/v1/me/notifications/bulk",
            json!({"ids": [id(1), id(3)], "action": "archive"}),
        )
        .await;
    assert_eq!(bulk["changed"].as_array().unwrap().len(), 2);
    server
        .post(
            "u1",
            "/v1/me/notifications/bulk",
            json!({"ids": [id(10)], "action": "delete"}),
        )
        .await;
    assert_eq!(server.list("").await, [8, 7, 6, 5, 4, 2]);
    let all_read = server
        .post(
            "u1",
            "/v1/me/notifications/read-all",
            json!({"category": "billing"}),
        )
        .await;
    assert_eq!(all_read["marked"], 2, "6 and 8");
    assert_eq!(all_read["counts"]["unread"], 1, "only 7 is left");
    assert_eq!(server.list("read=false").await, [7]);

    // Export has the same rows as the list, with the same filters.
    let (status, _, csv) = server
        .call(
            Method::GET,
            "/v1/me/notifications/export?format=csv&type=comment",
            Some(&token_for("u1")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1 + 2, "header and items 7, 5: {csv}");
    assert!(lines[0].starts_with("id,notification_id,type"));
    assert!(lines[1].starts_with(&id(7)) && lines[2].starts_with(&id(5)));
    let json_export = server
        .get(
            "u1",
            "/v1/me/notifications/export?format=json&archived=true",
        )
        .await;
    let archived: Vec<&str> = json_export
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap())
        .collect();
    assert_eq!(archived, [id(9), id(3), id(1)]);
}

#[tokio::test]
async fn bad_parameters_are_400_naming_the_parameter() {
    let server = Server::start().await;
    let token = token_for("u1");
    for (query, named) in [
        ("read=maybe", "read"),
        ("sort=best", "sort"),
        ("limit=0", "limit"),
        ("since=yesterday", "since"),
        ("cursor=zzz", "cursor"),
        ("colour=red", "colour"),
    ] {
        let (status, body, text) = server
            .call(
                Method::GET,
                &format!("/v1/me/notifications?{query}"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {text}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(named),
            "{query}: {text}"
        );
    }
    let (status, _, text) = server
        .call(
            Method::POST,
            "/v1/me/notifications/bulk",
            Some(&token),
            Some(json!({"ids": [], "action": "read"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
}

/// Snooze over HTTP (the store's rules are tested in
/// `storage_inbox.rs`): one item and in bulk, a listing of snoozed items,
/// and every bad body a 400 naming what is wrong that changes nothing.
#[tokio::test]
async fn snooze_hides_items_and_bad_snoozes_are_refused_by_name() {
    let server = Server::start().await;
    server.seed().await;
    let token = token_for("u1");
    let soon = (Timestamp::now() + jiff::SignedDuration::from_hours(2)).to_string();
    let item = server
        .post(
            "u1",
            &format!("/v1/me/notifications/{}/snooze", id(3)),
            json!({ "until": soon }),
        )
        .await;
    assert_eq!(item["id"], id(3));
    assert!(item["snoozed_until"].is_string(), "{item}");
    let bulk = server
        .post(
            "u1",
            "/v1/me/notifications/bulk",
            json!({"ids": [id(4), id(5), id(99)], "action": "snooze", "until": soon}),
        )
        .await;
    assert_eq!(bulk["changed"], json!([id(4), id(5)]));
    assert_eq!(bulk["not_found"], json!([id(99)]));
    assert_eq!(server.list("snoozed=true&sort=oldest").await, [3, 4, 5]);
    assert!(!server.list("limit=50").await.contains(&4));
    let counts = server.get("u1", "/v1/me/notifications/counts").await;
    assert_eq!(
        (counts["unread"].as_u64(), counts["total"].as_u64()),
        (Some(7), Some(10))
    );
    let csv = server
        .call(
            Method::GET,
            "/v1/me/notifications/export?format=csv&snoozed=true",
            Some(&token),
            None,
        )
        .await
        .2;
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(
        csv.lines().next().unwrap().ends_with(",snoozed_until"),
        "{csv}"
    );

    let path = format!("/v1/me/notifications/{}/snooze", id(6));
    let past = "2020-01-01T00:00:00Z";
    let far = (Timestamp::now() + jiff::SignedDuration::from_hours(24 * 400)).to_string();
    for (route, body, named) in [
        (path.as_str(), json!({"until": past}), "until"),
        (path.as_str(), json!({"until": far}), "until"),
        (path.as_str(), json!({"until": "tomorrow"}), "until"),
        (
            path.as_str(),
            json!({"until": "2030-01-01T09:00:00"}),
            "until",
        ),
        (path.as_str(), json!({}), "until"),
        (path.as_str(), json!({"until": soon, "for": "1h"}), "for"),
        (
            "/v1/me/notifications/bulk",
            json!({"ids": [id(6)], "action": "snooze"}),
            "until",
        ),
        (
            "/v1/me/notifications/bulk",
            json!({"ids": [id(6)], "action": "read", "until": soon}),
            "until",
        ),
    ] {
        let (status, answer, text) = server
            .call(Method::POST, route, Some(&token), Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(named),
            "{body}: {text}"
        );
    }
    let untouched = server
        .get("u1", &format!("/v1/me/notifications/{}", id(6)))
        .await;
    assert!(untouched.get("snoozed_until").is_none(), "{untouched}");
    assert!(untouched.get("read_at").is_none(), "{untouched}");

    // Cancelled early: back at once, unread.
    server
        .post(
            "u1",
            &format!("/v1/me/notifications/{}/read", id(3)),
            json!(null),
        )
        .await;
    let back = server
        .post(
            "u1",
            &format!("/v1/me/notifications/{}/unsnooze", id(3)),
            json!(null),
        )
        .await;
    assert!(
        back.get("snoozed_until").is_none() && back.get("read_at").is_none(),
        "{back}"
    );
    assert_eq!(server.list("snoozed=true&sort=oldest").await, [4, 5]);
}

fn event(id: &str, user: &str, body: EventBody, second: i64) -> Event {
    Event {
        id: id.into(),
        user_id: Some(user.into()),
        anonymous_id: None,
        timestamp: Some(Timestamp::from_second(1_800_000_000 + second).unwrap()),
        sent_at: None,
        received_at: None,
        ingested_at: Timestamp::from_second(1_800_000_000 + second).unwrap(),
        agent_id: "agent-7".into(),
        write_key: Some("wk_secret".into()),
        context: Map::new(),
        integrations: Map::new(),
        body,
    }
}

fn track(name: &str, properties: &Value) -> EventBody {
    EventBody::Track {
        event: name.into(),
        properties: properties.as_object().unwrap().clone(),
    }
}

#[tokio::test]
async fn the_activity_feed_is_the_users_own_filtered_and_without_secrets() {
    let server = Server::start().await;
    let day = 86_400;
    server
        .store
        .ingest(vec![
            event("e1", "u1", track("view", &json!({"product_id": "p1"})), 0),
            event(
                "e2",
                "u1",
                track("cart_add", &json!({"product_id": "p1"})),
                60,
            ),
            event("e3", "u1", track("view", &json!({"product_id": "p2"})), day),
            event("e4", "u2", track("view", &json!({"product_id": "p1"})), 0),
        ])
        .await
        .unwrap();

    let feed = server.get("u1", "/v1/me/activity").await;
    let items = feed["activity"].as_array().unwrap();
    let ids: Vec<&str> = items.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["e1", "e2", "e3"]);
    let text = feed.to_string();
    assert!(
        !text.contains("wk_secret") && !text.contains("agent-7"),
        "{text}"
    );

    let p1 = server.get("u1", "/v1/me/activity?resource=p1").await;
    assert_eq!(p1["activity"].as_array().unwrap().len(), 2);
    let views = server.get("u1", "/v1/me/activity?event=view&limit=1").await;
    assert_eq!(views["activity"][0]["id"], "e1");
    let cursor = views["next_cursor"].as_str().unwrap().to_owned();
    let next = server
        .get(
            "u1",
            &format!("/v1/me/activity?event=view&limit=1&cursor={cursor}"),
        )
        .await;
    assert_eq!(next["activity"][0]["id"], "e3");
    // A full page may carry a cursor; following it gives nothing more.
    if let Some(cursor) = next["next_cursor"].as_str() {
        let after = server
            .get(
                "u1",
                &format!("/v1/me/activity?event=view&limit=1&cursor={cursor}"),
            )
            .await;
        assert_eq!(after["activity"], json!([]));
    }

    let summary = server.get("u1", "/v1/me/activity/summary").await;
    assert_eq!(summary["total"], 3);
    assert_eq!(summary["by_event"]["view"], 2);
    assert_eq!(summary["active_days"], 2);
}
