//! The inbox's live stream over the real programs (issue 4, "Live
//! stream"): an application tracks an event at the agent, a rule turns it
//! into an in-app notification, and a client on the control plane's
//! WebSocket (`/v1/me/stream`) receives it; after a disconnect it resumes
//! from its cursor without gaps or duplicates. And across replicas
//! (issue 13): two control planes on one PostgreSQL database, a stream on
//! one follows what the other commits and resumes on the other.

// `support` is shared with `e2e.rs`; this binary uses only part of it.
#[allow(dead_code)]
mod support;

use std::time::Duration;

use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use nudge_control_plane::http::user_auth::UserTokenSecret;
use nudge_e2e::{Agent, ControlPlane};
use support::{setup, wait_until};

const USER_TOKEN_SECRET: &str = "inbox-e2e-user-token-secret-0123456789abcdef";
const USER: &str = "stream-user-1";
/// From the track call to the frame: agent intake, shipping, the rule, the
/// delivery queue and the in-app channel.
const FRAME_LIMIT: Duration = Duration::from_secs(30);

const ENGINE: &str = r#"
[types.comment]
channels = ["in_app"]
category = "social"

[types.comment.templates]
fallback = { title = "{{ data.author }} commented", text = "{{ data.text }}" }

[[rules]]
name = "comment-posted"
on = "Comment Posted"
notify = "comment"
"#;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Stack {
    control_plane: ControlPlane,
    agent: Agent,
    token: String,
    _config: tempfile::TempDir,
}

impl Stack {
    async fn start() -> Self {
        Self::start_on(None).await
    }

    /// The stack on PostgreSQL at `database_url`, or on embedded SQLite.
    async fn start_on(database_url: Option<&str>) -> Self {
        let config = tempfile::tempdir().unwrap();
        let path = config.path().join("nudge.toml");
        std::fs::write(&path, ENGINE).unwrap();
        let mut control_plane = ControlPlane::new(setup()).unwrap().with_env([
            ("NUDGE_CP_CONFIG", path.to_str().unwrap()),
            ("NUDGE_CP_USER_TOKEN_SECRET", USER_TOKEN_SECRET),
        ]);
        if let Some(url) = database_url {
            control_plane = control_plane.with_env([("NUDGE_CP_DATABASE_URL", url)]);
        }
        control_plane.start().await.unwrap();
        let agent = Agent::started(setup(), &control_plane.grpc_url(), &[])
            .await
            .unwrap();
        Stack {
            control_plane,
            agent,
            token: user_token(),
            _config: config,
        }
    }

    async fn connect(&self, cursor: Option<u64>) -> Socket {
        connect(&self.control_plane, &self.token, cursor).await
    }

    async fn comment(&self, message_id: &str, author: &str) {
        comment(&self.agent, message_id, author).await;
    }

    async fn me(&self, method: reqwest::Method, path: &str) -> Value {
        me(&self.control_plane, &self.token, method, path).await
    }
}

/// A token of [`USER`], signed as the application's backend would.
fn user_token() -> String {
    let secret: UserTokenSecret = USER_TOKEN_SECRET.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    secret.sign(&json!({"sub": USER, "exp": now + 3600}))
}

/// A WebSocket to `control_plane`'s live stream, resuming after `cursor`.
async fn connect(control_plane: &ControlPlane, token: &str, cursor: Option<u64>) -> Socket {
    let mut url = format!(
        "ws://{}/v1/me/stream?access_token={token}",
        control_plane.http
    );
    if let Some(cursor) = cursor {
        url.push_str(&format!("&cursor={cursor}"));
    }
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// The application tracks a comment at the agent.
async fn comment(agent: &Agent, message_id: &str, author: &str) {
    let body = json!({
        "userId": USER,
        "event": "Comment Posted",
        "messageId": message_id,
        "properties": {"author": author, "text": "Nice work"},
    });
    let reply = agent.post("/v1/track", &body).await.unwrap();
    assert!(reply.is_success(), "track: {reply:?}");
}

/// A `/v1/me/...` call of [`USER`] to `control_plane`, which must succeed
/// (and answer as `openapi.json` says: [`ControlPlane::send_as`]).
async fn me(
    control_plane: &ControlPlane,
    token: &str,
    method: reqwest::Method,
    path: &str,
) -> Value {
    let (status, text) = control_plane
        .send_as(Some(token), method, path, None)
        .await
        .unwrap();
    assert!((200..300).contains(&status), "{path}: {status}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// The next JSON text frame within [`FRAME_LIMIT`] (one deadline for the
/// whole wait: the server's pings, every 25 s, must not extend it).
async fn next_frame(socket: &mut Socket) -> Value {
    let deadline = tokio::time::Instant::now() + FRAME_LIMIT;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("a frame in time")
            .expect("the stream is open")
            .expect("a good frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracked_event_reaches_the_websocket_and_a_reconnect_resumes_from_the_cursor() {
    let stack = Stack::start().await;
    let mut socket = stack.connect(None).await;
    let hello = next_frame(&mut socket).await;
    assert_eq!(hello["type"], "hello", "{hello}");
    assert_eq!(hello["counts"]["unread"], 0);

    stack.comment("comment-1", "Ada").await;
    let frame = next_frame(&mut socket).await;
    assert_eq!(frame["type"], "change", "{frame}");
    assert_eq!(frame["kind"], "added");
    assert_eq!(frame["item"]["title"], "Ada commented");
    assert_eq!(frame["item"]["type"], "comment");
    assert_eq!(frame["counts"]["unread"], 1);
    let cursor = frame["seq"].as_u64().unwrap();
    drop(socket);

    // While away: two more comments arrive, and another tab reads one.
    stack.comment("comment-2", "Bo").await;
    stack.comment("comment-3", "Cy").await;
    wait_until("three items in the inbox", || async {
        stack.me(reqwest::Method::GET, "/v1/me/notifications").await["items"]
            .as_array()
            .map_or(0, Vec::len)
            == 3
    })
    .await;
    let page = stack
        .me(reqwest::Method::GET, "/v1/me/notifications?sort=oldest")
        .await;
    let ids: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_owned())
        .collect();
    stack
        .me(
            reqwest::Method::POST,
            &format!("/v1/me/notifications/{}/read", ids[1]),
        )
        .await;

    let mut socket = stack.connect(Some(cursor)).await;
    let mut missed = Vec::new();
    let hello = loop {
        let frame = next_frame(&mut socket).await;
        if frame["type"] == "hello" {
            break frame;
        }
        missed.push(frame);
    };
    let seen: Vec<(&str, &str)> = missed
        .iter()
        .map(|f| (f["kind"].as_str().unwrap(), f["id"].as_str().unwrap()))
        .collect();
    // The two comments may be delivered in either order; the stream sends
    // the log's order.
    let mut added: Vec<&str> = seen.iter().take(2).map(|(_, id)| *id).collect();
    added.sort_unstable();
    assert_eq!(seen.len(), 3, "exactly the missed changes: {seen:?}");
    assert!(
        seen[..2].iter().all(|(kind, _)| *kind == "added"),
        "{seen:?}"
    );
    assert_eq!(added, [ids[1].as_str(), ids[2].as_str()]);
    assert_eq!(seen[2], ("updated", ids[1].as_str()));
    let seqs: Vec<u64> = missed.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
    assert!(seqs[0] > cursor && seqs.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(hello["cursor"].as_u64(), Some(seqs[2]));
    assert_eq!(hello["counts"]["unread"], 2);

    // Live again after the resume.
    stack.comment("comment-4", "Di").await;
    let frame = next_frame(&mut socket).await;
    assert_eq!(
        (frame["kind"].as_str(), frame["item"]["title"].as_str()),
        (Some("added"), Some("Di commented"))
    );
    assert!(frame["seq"].as_u64().unwrap() > seqs[2]);

    let metrics = stack.control_plane.metrics().await.unwrap();
    assert!(
        metrics.contains("nudge_cp_live_connections{transport=\"websocket\"} 1"),
        "{metrics}"
    );
}

/// Issue 16, item 5: snooze in the inbox, over the real programs. A
/// notification snoozed for a few seconds leaves the badge and the
/// listing, its stream gets the change, and the control plane's waker
/// brings it back as unread on the stream; a snooze time in the past is
/// refused, naming `until`, and changes nothing.
async fn a_snoozed_notification_leaves_the_badge_and_comes_back_on_the_stream(
    database_url: Option<&str>,
) {
    let stack = Stack::start_on(database_url).await;
    let mut socket = stack.connect(None).await;
    assert_eq!(next_frame(&mut socket).await["type"], "hello");
    stack.comment("comment-1", "Ada").await;
    let added = next_frame(&mut socket).await;
    assert_eq!(added["kind"], "added", "{added}");
    let id = added["id"].as_str().unwrap().to_owned();
    stack
        .me(
            reqwest::Method::POST,
            &format!("/v1/me/notifications/{id}/read"),
        )
        .await;
    assert_eq!(next_frame(&mut socket).await["counts"]["unread"], 0);

    let snooze = |until: String| {
        let body = json!({ "until": until });
        let path = format!("/v1/me/notifications/{id}/snooze");
        let token = stack.token.clone();
        let control_plane = &stack.control_plane;
        async move {
            control_plane
                .send_as(Some(&token), reqwest::Method::POST, &path, Some(&body))
                .await
                .unwrap()
        }
    };
    let (status, text) = snooze("2020-01-01T00:00:00Z".into()).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("until:"), "{text}");

    let until = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3);
    let (status, text) = snooze(until.to_string()).await;
    assert_eq!(status, 200, "{text}");
    let item: Value = serde_json::from_str(&text).unwrap();
    assert!(item["snoozed_until"].is_string(), "{item}");
    let frame = next_frame(&mut socket).await;
    assert_eq!(
        (frame["kind"].as_str(), frame["id"].as_str()),
        (Some("updated"), Some(id.as_str()))
    );
    assert!(frame["item"]["snoozed_until"].is_string(), "{frame}");
    let listed = stack.me(reqwest::Method::GET, "/v1/me/notifications").await;
    assert_eq!(listed["items"], json!([]), "hidden from the listing");
    let snoozed = stack
        .me(reqwest::Method::GET, "/v1/me/notifications?snoozed=true")
        .await;
    assert_eq!(snoozed["items"][0]["id"], id.as_str());

    // The waker brings it back, unread and unseen, within FRAME_LIMIT.
    let back = next_frame(&mut socket).await;
    assert_eq!(
        (back["kind"].as_str(), back["id"].as_str()),
        (Some("updated"), Some(id.as_str())),
        "{back}"
    );
    assert!(back["item"].get("snoozed_until").is_none(), "{back}");
    assert!(back["item"].get("read_at").is_none(), "{back}");
    assert_eq!(back["counts"]["unread"], 1);
    assert!(
        jiff::Timestamp::now() >= until,
        "not back before its time: {back}"
    );
    let counts = stack
        .me(reqwest::Method::GET, "/v1/me/notifications/counts")
        .await;
    assert_eq!(
        (counts["unread"].as_u64(), counts["unseen"].as_u64()),
        (Some(1), Some(1))
    );
    let metrics = stack.control_plane.metrics().await.unwrap();
    assert_eq!(counter(&metrics, "nudge_cp_inbox_snoozes_woken_total"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snooze_on_sqlite() {
    a_snoozed_notification_leaves_the_badge_and_comes_back_on_the_stream(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snooze_on_postgres() {
    let url = nudge_e2e::postgres::fresh_database().await;
    a_snoozed_notification_leaves_the_badge_and_comes_back_on_the_stream(Some(&url)).await;
}

/// The value of a counter without labels in a `/metrics` text.
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

/// Issue 13, item 3: two control-plane replicas on one PostgreSQL
/// database. A WebSocket on replica 1 gets the change replica 2 commits;
/// replica 1 is then SIGKILLed, and the client reconnects to replica 2
/// with its cursor and gets exactly what it missed, and live changes that
/// replica 1 (restarted) commits. Which replica's
/// engine planned a notification is not what is tested (both may run the
/// rule today); the reads are committed by one known replica each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_follows_another_replica_and_resumes_on_it_without_gaps() {
    let url = nudge_e2e::postgres::fresh_database().await;
    let config = tempfile::tempdir().unwrap();
    let path = config.path().join("nudge.toml");
    std::fs::write(&path, ENGINE).unwrap();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let mut replica = ControlPlane::new(setup()).unwrap().with_env([
            ("NUDGE_CP_CONFIG", path.to_str().unwrap()),
            ("NUDGE_CP_USER_TOKEN_SECRET", USER_TOKEN_SECRET),
            ("NUDGE_CP_DATABASE_URL", url.as_str()),
            // A killed replica's feed partitions move within seconds.
            ("NUDGE_CP_LEASE_TTL", "3s"),
        ]);
        replica.start().await.unwrap();
        replicas.push(replica);
    }
    let (one, two) = (&replicas[0], &replicas[1]);
    let agent = Agent::started(setup(), &two.grpc_url(), &[]).await.unwrap();
    let token = user_token();
    let me_on = |replica, method, path: String| {
        let token = token.clone();
        async move { me(replica, &token, method, &path).await }
    };

    let mut socket = connect(one, &token, None).await;
    let hello = next_frame(&mut socket).await;
    assert_eq!(hello["type"], "hello", "{hello}");
    let mut last = hello["cursor"].as_u64().unwrap();

    // A notification planned on either replica reaches the stream.
    comment(&agent, "comment-1", "Ada").await;
    let frame = next_frame(&mut socket).await;
    assert_eq!(
        (frame["type"].as_str(), frame["kind"].as_str()),
        (Some("change"), Some("added")),
        "{frame}"
    );
    assert_eq!(frame["item"]["title"], "Ada commented");
    assert_eq!(frame["seq"].as_u64(), Some(last + 1), "{frame}");
    last += 1;
    let first = frame["id"].as_str().unwrap().to_owned();

    // Replica 2 alone commits this read: replica 1's stream hears of it.
    me_on(
        two,
        reqwest::Method::POST,
        format!("/v1/me/notifications/{first}/read"),
    )
    .await;
    let frame = next_frame(&mut socket).await;
    assert_eq!(
        (frame["kind"].as_str(), frame["id"].as_str()),
        (Some("updated"), Some(first.as_str())),
        "{frame}"
    );
    assert_eq!(frame["seq"].as_u64(), Some(last + 1), "{frame}");
    assert_eq!(frame["counts"]["unread"], 0);
    last += 1;

    // The stream's replica is killed under it (SIGKILL). While the client
    // is away: two more comments, planned by the survivor, then replica 1
    // is back and a tab on it reads one.
    // (What replica 1 counted goes with it.)
    let metrics = one.metrics().await.unwrap();
    assert!(
        counter(&metrics, "nudge_cp_live_remote_changes_total") >= 1.0,
        "{metrics}"
    );
    replicas[0].process.kill();
    let closed = tokio::time::timeout(Duration::from_secs(30), socket.next()).await;
    assert!(
        matches!(
            closed,
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_))))
        ),
        "the stream ends with its replica: {closed:?}"
    );
    comment(&agent, "comment-2", "Bo").await;
    comment(&agent, "comment-3", "Cy").await;
    replicas[0].start().await.unwrap();
    // New borrows of the restarted replicas (the closure's are tied to
    // the old ones).
    let (one, two) = (&replicas[0], &replicas[1]);
    let me_on = |replica, method, path: String| {
        let token = token.clone();
        async move { me(replica, &token, method, &path).await }
    };
    wait_until("three items in the inbox", || async {
        me_on(one, reqwest::Method::GET, "/v1/me/notifications".into()).await["items"]
            .as_array()
            .map_or(0, Vec::len)
            == 3
    })
    .await;
    let page = me_on(
        one,
        reqwest::Method::GET,
        "/v1/me/notifications?sort=oldest".into(),
    )
    .await;
    let ids: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3, "{page}");
    me_on(
        one,
        reqwest::Method::POST,
        format!("/v1/me/notifications/{}/read", ids[1]),
    )
    .await;

    // Reconnect to replica 2 with the cursor: exactly what was missed.
    let mut socket = connect(two, &token, Some(last)).await;
    let mut missed = Vec::new();
    let hello = loop {
        let frame = next_frame(&mut socket).await;
        if frame["type"] == "hello" {
            break frame;
        }
        missed.push(frame);
    };
    let seqs: Vec<u64> = missed.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        [last + 1, last + 2, last + 3],
        "no gap, no duplicate: {missed:?}"
    );
    let mut added: Vec<&str> = missed[..2]
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    added.sort_unstable();
    assert!(
        missed[..2].iter().all(|f| f["kind"] == "added"),
        "{missed:?}"
    );
    assert_eq!(added, [ids[1].as_str(), ids[2].as_str()]);
    assert_eq!(
        (missed[2]["kind"].as_str(), missed[2]["id"].as_str()),
        (Some("updated"), Some(ids[1].as_str()))
    );
    assert_eq!(hello["cursor"].as_u64(), Some(last + 3));
    assert_eq!(hello["counts"]["unread"], 1);
    last += 3;

    // Live on replica 2 with what replica 1 commits.
    me_on(
        one,
        reqwest::Method::POST,
        format!("/v1/me/notifications/{}/read", ids[2]),
    )
    .await;
    let frame = next_frame(&mut socket).await;
    assert_eq!(
        (frame["kind"].as_str(), frame["id"].as_str()),
        (Some("updated"), Some(ids[2].as_str())),
        "{frame}"
    );
    assert_eq!(frame["seq"].as_u64(), Some(last + 1), "{frame}");
    assert_eq!(frame["counts"]["unread"], 0);

    let metrics = two.metrics().await.unwrap();
    assert!(
        counter(&metrics, "nudge_cp_live_remote_changes_total") >= 1.0,
        "{metrics}"
    );
}
