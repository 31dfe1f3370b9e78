//! The live stream (`/v1/me/stream`, `/v1/me/events`) over real sockets:
//! the control plane's router on a loopback port with real stores in a
//! tempdir, a real WebSocket client (tokio-tungstenite) and reqwest reading
//! the SSE body. Items enter the inbox through `InboxStore::add`, as the
//! in-app channel adds them, and are read through the REST route. What is
//! observed: the frames, in order — every change after a cursor exactly
//! once, and nothing of another user's.

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use nudge_control_plane::http::stream_limits::Admission;
use nudge_control_plane::http::user_auth::UserTokenSecret;
use nudge_control_plane::http::{
    Heartbeat, HttpState, LiveMetrics, LiveStream, StreamLimits, router,
};
use nudge_control_plane::inbox::{InboxItem, InboxStore};
use nudge_control_plane::storage::Stores;

mod support;

const SECRET: &str = "a-test-secret-that-is-at-least-32-bytes";
/// How long a frame that should come may take; also how long "nothing
/// comes" is watched.
const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Server {
    _dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
    inbox: InboxStore,
    secret: UserTokenSecret,
    shutdown: tokio_util::sync::CancellationToken,
    metrics: LiveMetrics,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(heartbeat: Heartbeat) -> Self {
        Self::start_live(LiveStream {
            heartbeat,
            ..LiveStream::default()
        })
        .await
    }

    async fn start_live(live: LiveStream) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::open_embedded(dir.path()).await.unwrap();
        Self::serve(dir, &stores, live).await
    }

    /// The router over `stores` (whose files, if any, are in `dir`).
    async fn serve(dir: tempfile::TempDir, stores: &Stores, live: LiveStream) -> Self {
        let secret: UserTokenSecret = SECRET.parse().unwrap();
        let standalone = HttpState::standalone(stores).unwrap();
        let shutdown = live.shutdown.clone();
        let metrics = live.metrics.clone();
        let state = HttpState {
            user_tokens: Some(secret.clone()),
            live,
            ..standalone
        };
        let inbox = state.inbox.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                axum::serve(listener, router(state))
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await
                    .unwrap();
            }
        });
        Server {
            _dir: dir,
            addr,
            inbox,
            secret,
            shutdown,
            metrics,
            task,
        }
    }

    async fn started() -> Self {
        Self::start(Heartbeat::default()).await
    }

    fn open_connections(&self, transport: &str) -> i64 {
        self.metrics
            .connections
            .with_label_values(&[transport])
            .get()
    }

    fn token(&self, user: &str) -> String {
        let exp = Timestamp::now().as_second() + 600;
        self.secret.sign(&json!({"sub": user, "exp": exp}))
    }

    fn stream_url(&self, user: &str, cursor: Option<u64>) -> String {
        let mut url = format!(
            "ws://{}/v1/me/stream?access_token={}",
            self.addr,
            self.token(user)
        );
        if let Some(cursor) = cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        url
    }

    async fn connect(&self, user: &str, cursor: Option<u64>) -> Socket {
        let (socket, response) = tokio_tungstenite::connect_async(self.stream_url(user, cursor))
            .await
            .unwrap();
        assert_eq!(response.status(), 101);
        socket
    }

    /// Adds an item as the in-app channel does; returns its id.
    async fn add(&self, user: &str, title: &str) -> String {
        add_to(&self.inbox, user, title).await
    }

    /// Reads an item through the REST route, as a tab would.
    async fn read(&self, user: &str, id: &str) {
        let reply = reqwest::Client::new()
            .post(format!(
                "http://{}/v1/me/notifications/{id}/read",
                self.addr
            ))
            .bearer_auth(self.token(user))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200, "{}", reply.text().await.unwrap());
    }
}

/// Adds an item to `inbox` as the in-app channel does; returns its id.
async fn add_to(inbox: &InboxStore, user: &str, title: &str) -> String {
    let id = uuid::Uuid::now_v7().to_string();
    let item = InboxItem {
        id: id.clone(),
        notification_id: format!("n-{id}"),
        notification_type: "comment".to_owned(),
        category: Some("social".to_owned()),
        title: title.to_owned(),
        body: "body".to_owned(),
        data: Value::Null,
        created_at: Timestamp::now(),
        seen_at: None,
        read_at: None,
        archived_at: None,
        snoozed_until: None,
    };
    assert!(inbox.add(user, &item).await.unwrap());
    id
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The next JSON text frame (pings are answered by the client library)
/// within [`WAIT`].
async fn next_frame(socket: &mut Socket) -> Value {
    next_frame_within(socket, WAIT).await
}

/// The next JSON text frame within `limit`: one deadline for the whole
/// wait, so the server's pings cannot extend it.
async fn next_frame_within(socket: &mut Socket, limit: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("a frame before the deadline")
            .expect("the stream is open")
            .expect("a good frame");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

async fn assert_quiet(socket: &mut Socket) {
    if let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout(QUIET, socket.next()).await {
        panic!("unexpected frame {text}");
    }
}

fn hello(frame: &Value) -> u64 {
    assert_eq!(frame["type"], "hello", "{frame}");
    frame["cursor"].as_u64().unwrap()
}

fn change<'a>(frame: &'a Value, kind: &str, id: &str) -> &'a Value {
    assert_eq!(frame["type"], "change", "{frame}");
    assert_eq!(frame["kind"], kind, "{frame}");
    assert_eq!(frame["id"], id, "{frame}");
    frame
}

#[tokio::test]
async fn every_tab_of_a_user_gets_changes_and_counts_and_no_one_else_does() {
    let server = Server::started().await;
    let mut tab1 = server.connect("u1", None).await;
    let mut tab2 = server.connect("u1", None).await;
    let mut other = server.connect("u2", None).await;
    for socket in [&mut tab1, &mut tab2, &mut other] {
        let frame = next_frame(socket).await;
        assert_eq!(hello(&frame), 0);
        assert_eq!(frame["counts"]["unread"], 0);
    }

    let id = server.add("u1", "hello").await;
    let mut seqs = Vec::new();
    for socket in [&mut tab1, &mut tab2] {
        let frame = next_frame(socket).await;
        let added = change(&frame, "added", &id);
        assert_eq!(added["item"]["title"], "hello");
        assert_eq!(added["counts"]["unread"], 1);
        assert_eq!(added["counts"]["categories"]["social"]["unread"], 1);
        seqs.push(added["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs[0], seqs[1]);

    server.read("u1", &id).await;
    for socket in [&mut tab1, &mut tab2] {
        let frame = next_frame(socket).await;
        let updated = change(&frame, "updated", &id);
        assert!(updated["item"]["read_at"].is_string(), "{updated}");
        assert_eq!(updated["counts"]["unread"], 0);
        assert!(updated["seq"].as_u64().unwrap() > seqs[0]);
    }
    assert_quiet(&mut other).await;
    assert_eq!(server.open_connections("websocket"), 3);
    assert_eq!(
        server
            .metrics
            .messages
            .with_label_values(&["websocket"])
            .get(),
        3 + 2 * 2
    );
}

#[tokio::test]
async fn a_reconnect_with_the_cursor_gets_exactly_what_it_missed() {
    let server = Server::started().await;
    let first = server.add("u1", "before").await;
    let mut socket = server.connect("u1", None).await;
    let cursor = hello(&next_frame(&mut socket).await);
    assert!(cursor > 0);
    socket.close(None).await.unwrap();
    drop(socket);

    let a = server.add("u1", "a").await;
    let b = server.add("u1", "b").await;
    server.read("u1", &a).await;

    let mut socket = server.connect("u1", Some(cursor)).await;
    let missed = [
        change(&next_frame(&mut socket).await, "added", &a).clone(),
        change(&next_frame(&mut socket).await, "added", &b).clone(),
        change(&next_frame(&mut socket).await, "updated", &a).clone(),
    ];
    let seqs: Vec<u64> = missed.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(missed[2]["counts"]["unread"], 2, "first and b are unread");
    let frame = next_frame(&mut socket).await;
    assert_eq!(hello(&frame), seqs[2]);
    assert_eq!(frame["counts"]["unread"], 2);
    assert_quiet(&mut socket).await;

    // And live from there, with no repeat of the backlog.
    server.read("u1", &first).await;
    let frame = next_frame(&mut socket).await;
    assert!(change(&frame, "updated", &first)["seq"].as_u64().unwrap() > seqs[2]);
    assert_quiet(&mut socket).await;

    // A cursor at the end sends nothing but hello.
    let last = frame["seq"].as_u64().unwrap();
    let mut again = server.connect("u1", Some(last)).await;
    assert_eq!(hello(&next_frame(&mut again).await), last);
    assert_quiet(&mut again).await;
}

#[tokio::test]
async fn a_cursor_older_than_the_log_gets_a_reset() {
    let server = Server::started().await;
    let mut socket = server.connect("u1", None).await;
    let cursor = hello(&next_frame(&mut socket).await);
    drop(socket);
    server.add("u1", "a").await;
    server.add("u1", "b").await;
    let removed = server
        .inbox
        .prune_changes(
            Timestamp::now() + jiff::SignedDuration::from_secs(1),
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(removed, 2);

    let mut socket = server.connect("u1", Some(cursor)).await;
    let reset = next_frame(&mut socket).await;
    assert_eq!(reset["type"], "reset", "{reset}");
    assert!(reset["reason"].as_str().unwrap().contains("reload"));
    let frame = next_frame(&mut socket).await;
    let resumed_at = hello(&frame);
    assert_eq!(frame["counts"]["unread"], 2);

    // The hello's cursor is good: resuming from it is no reset.
    drop(socket);
    let mut socket = server.connect("u1", Some(resumed_at)).await;
    assert_eq!(hello(&next_frame(&mut socket).await), resumed_at);
    let c = server.add("u1", "c").await;
    change(&next_frame(&mut socket).await, "added", &c);
}

#[tokio::test]
async fn pings_are_answered_and_silent_clients_are_closed() {
    let server = Server::start(Heartbeat {
        ping_every: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(350),
    })
    .await;
    let mut socket = server.connect("u1", None).await;
    hello(&next_frame(&mut socket).await);
    socket
        .send(Message::text(r#"{"type":"ping"}"#))
        .await
        .unwrap();
    assert_eq!(next_frame(&mut socket).await, json!({"type": "pong"}));
    // Unknown frames are ignored.
    socket
        .send(Message::text(r#"{"type":"subscribe","topic":"x"}"#))
        .await
        .unwrap();
    socket
        .send(Message::text(r#"{"type":"ping"}"#))
        .await
        .unwrap();
    assert_eq!(next_frame(&mut socket).await, json!({"type": "pong"}));

    // The server pings; reading answers with pongs and keeps the
    // connection open well past the idle timeout.
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(800);
    while let Ok(Some(message)) = tokio::time::timeout_at(until, socket.next()).await {
        match message.unwrap() {
            Message::Ping(_) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pings >= 4, "{pings} pings in 800 ms");

    // A client that stops reading never answers: the server closes it.
    let mut silent = server.connect("u1", None).await;
    assert_eq!(server.open_connections("websocket"), 2);
    // Hold the connection without polling it (so no pongs go out): the
    // server gives up on it while the first one stays open.
    let _ = tokio::time::timeout(Duration::from_millis(700), async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
    assert_eq!(server.open_connections("websocket"), 1);
    // What it sent last, after its pings, was a close frame (the client
    // library may fail first, answering a ping on the closed socket).
    let mut close = None;
    while let Ok(Some(Ok(message))) = tokio::time::timeout(WAIT, silent.next()).await {
        if let Message::Close(frame) = message {
            close = frame;
        }
    }
    if let Some(frame) = close {
        assert_eq!(
            (u16::from(frame.code), frame.reason.as_str()),
            (1001, "no pong")
        );
    }
    drop(socket);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.open_connections("websocket"), 0);
}

#[tokio::test]
async fn binary_and_oversized_frames_close_the_connection() {
    let server = Server::started().await;
    let mut socket = server.connect("u1", None).await;
    hello(&next_frame(&mut socket).await);
    socket.send(Message::binary(vec![0u8; 16])).await.unwrap();
    assert_closed_with(&mut socket, 1003).await;

    let mut socket = server.connect("u1", None).await;
    hello(&next_frame(&mut socket).await);
    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(64 * 1024));
    // The server may reset before the whole frame is written.
    let _ = socket.send(Message::text(big)).await;
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the oversized frame did not end the stream");
}

async fn assert_closed_with(socket: &mut Socket, code: u16) {
    loop {
        match tokio::time::timeout(WAIT, socket.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), code, "{frame:?}");
                return;
            }
            Some(Ok(Message::Text(text))) => panic!("unexpected frame {text}"),
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_stream_ticket_opens_the_stream_and_nothing_else() {
    let server = Server::started().await;
    let client = reqwest::Client::new();
    let ticket_url = format!("http://{}/v1/me/stream-ticket", server.addr);
    // Without a bearer token there is no ticket.
    let reply = client.post(&ticket_url).send().await.unwrap();
    assert_eq!(reply.status(), 401);
    let reply = client
        .post(&ticket_url)
        .bearer_auth(server.token("u1"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.headers()["cache-control"], "no-store");
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["expires_in"], 60);
    let ticket = body["ticket"].as_str().unwrap().to_owned();

    // It opens the WebSocket and SSE of its user, and that user only.
    let url = format!("ws://{}/v1/me/stream?ticket={ticket}", server.addr);
    let (mut socket, response) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert_eq!(response.status(), 101);
    hello(&next_frame(&mut socket).await);
    let id = server.add("u1", "for u1").await;
    change(&next_frame(&mut socket).await, "added", &id);
    let reply = client
        .get(format!(
            "http://{}/v1/me/events?ticket={ticket}",
            server.addr
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    drop(reply);

    // It is not a user token anywhere else.
    let reply = client
        .get(format!("http://{}/v1/me/notifications", server.addr))
        .bearer_auth(&ticket)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 401);
    let body: Value = reply.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stream ticket"),
        "{body}"
    );
    let reply = client
        .post(&ticket_url)
        .bearer_auth(&ticket)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 401, "a ticket does not buy another ticket");

    // Expired, forged, or a user token in its place: no upgrade.
    let now = Timestamp::now().as_second();
    let expired = server.secret.stream_ticket("u1", now - 120);
    let other: UserTokenSecret = "somebody-else-s-secret-of-32-bytes!".parse().unwrap();
    let forged = other.stream_ticket("u1", now);
    let token = server.token("u1");
    for (label, bad) in [
        ("expired", &expired),
        ("forged", &forged),
        ("user token", &token),
    ] {
        let url = format!("ws://{}/v1/me/stream?ticket={bad}", server.addr);
        match tokio_tungstenite::connect_async(&url).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401, "{label}")
            }
            other => panic!("{label}: expected 401, got {other:?}"),
        }
        let reply = client
            .get(format!("http://{}/v1/me/events?ticket={bad}", server.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 401, "{label}");
    }
}

#[tokio::test]
async fn without_a_valid_token_there_is_no_upgrade() {
    let server = Server::started().await;
    let expired = server
        .secret
        .sign(&json!({"sub": "u1", "exp": Timestamp::now().as_second() - 3600}));
    for url in [
        format!("ws://{}/v1/me/stream", server.addr),
        format!("ws://{}/v1/me/stream?access_token={expired}", server.addr),
        format!("ws://{}/v1/me/stream?access_token=junk", server.addr),
    ] {
        match tokio_tungstenite::connect_async(&url).await {
            Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
            other => panic!("{url}: expected 401, got {other:?}"),
        }
    }
    let client = reqwest::Client::new();
    let reply = client
        .get(format!("http://{}/v1/me/events", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 401);
    let reply = client
        .get(format!("http://{}/v1/me/events", server.addr))
        .bearer_auth(&expired)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 401);
    // A bad cursor is a 400 that names it.
    let reply = client
        .get(format!("http://{}/v1/me/events?cursor=abc", server.addr))
        .bearer_auth(server.token("u1"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 400);
    assert!(reply.text().await.unwrap().contains("cursor"));
}

/// An SSE body read event by event.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn open(server: &Server, user: &str, last_event_id: Option<u64>) -> Self {
        let mut request = reqwest::Client::new()
            .get(format!(
                "http://{}/v1/me/events?access_token={}",
                server.addr,
                server.token(user)
            ))
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Events {
            response,
            buffer: String::new(),
        }
    }

    /// The next event with data: `(id, data)`; comments are skipped.
    async fn next(&mut self) -> (Option<u64>, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id:") {
                        id = Some(value.trim().parse().unwrap());
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data = Some(serde_json::from_str(value.trim()).unwrap());
                    }
                }
                match data {
                    Some(data) => return (id, data),
                    None => continue,
                }
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk())
                .await
                .expect("an event within 5 s")
                .unwrap()
                .expect("the stream is open");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

#[tokio::test]
async fn server_sent_events_carry_the_same_frames_and_resume_from_last_event_id() {
    let server = Server::started().await;
    let mut events = Events::open(&server, "u1", None).await;
    let (id, frame) = events.next().await;
    assert_eq!((id, hello(&frame)), (None, 0));

    let a = server.add("u1", "a").await;
    let (id, frame) = events.next().await;
    change(&frame, "added", &a);
    assert_eq!(id, frame["seq"].as_u64());
    let last_id = id.unwrap();
    drop(events);

    let b = server.add("u1", "b").await;
    server.read("u1", &a).await;
    server.add("u2", "not yours").await;
    let mut events = Events::open(&server, "u1", Some(last_id)).await;
    let (id1, frame) = events.next().await;
    change(&frame, "added", &b);
    let (id2, frame) = events.next().await;
    change(&frame, "updated", &a);
    assert!(id1.unwrap() > last_id && id2.unwrap() > id1.unwrap());
    let (_, frame) = events.next().await;
    assert_eq!(hello(&frame), id2.unwrap());
    assert_eq!(frame["counts"]["unread"], 1);
}

#[tokio::test]
async fn shutdown_ends_every_stream() {
    let server = Server::started().await;
    let mut socket = server.connect("u1", None).await;
    hello(&next_frame(&mut socket).await);
    let mut events = Events::open(&server, "u1", None).await;
    events.next().await;

    server.shutdown.cancel();
    assert_closed_with(&mut socket, 1001).await;
    let ended = tokio::time::timeout(WAIT, async {
        while let Ok(Some(_)) = events.response.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the SSE body did not end");
}

/// Polls `check` until it holds (connections close asynchronously).
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The WebSocket handshake's refusal: status, `Retry-After`, error code.
async fn refused(server: &Server, user: &str) -> (u16, bool, String) {
    match tokio_tungstenite::connect_async(server.stream_url(user, None)).await {
        Err(tungstenite::Error::Http(response)) => {
            let body = String::from_utf8(response.body().clone().unwrap_or_default()).unwrap();
            let code: Value = serde_json::from_str(&body).unwrap();
            (
                response.status().as_u16(),
                response.headers().contains_key("retry-after"),
                code["error"]["code"].as_str().unwrap().to_owned(),
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn streams_beyond_the_caps_are_refused_clearly_and_counted() {
    let server = Server::start_live(LiveStream {
        admission: Admission::new(StreamLimits {
            per_user: 2,
            total: 3,
        }),
        ..LiveStream::default()
    })
    .await;
    let mut tab1 = server.connect("u1", None).await;
    hello(&next_frame(&mut tab1).await);
    let _tab2 = server.connect("u1", None).await;
    assert_eq!(
        refused(&server, "u1").await,
        (429, true, "too_many_streams".to_owned())
    );
    // SSE goes through the same admission.
    let reply = reqwest::Client::new()
        .get(format!("http://{}/v1/me/events", server.addr))
        .bearer_auth(server.token("u1"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 429);
    assert!(reply.headers().contains_key("retry-after"));
    assert!(reply.text().await.unwrap().contains("too_many_streams"));

    let _other = server.connect("u2", None).await;
    assert_eq!(
        refused(&server, "u3").await,
        (503, true, "streams_full".to_owned())
    );
    let refusals = |reason: &str| server.metrics.refused.with_label_values(&[reason]).get();
    assert_eq!((refusals("per_user"), refusals("total")), (2, 1));

    // A closed tab gives its slot back.
    tab1.close(None).await.unwrap();
    drop(tab1);
    eventually("u1's slot is given back", || {
        server.open_connections("websocket") == 2
    })
    .await;
    let mut again = server.connect("u1", None).await;
    hello(&next_frame(&mut again).await);
}

/// 200 users open a stream and leave: nothing of theirs stays in the hub
/// (before, every one kept a 256-slot channel until a later change).
#[tokio::test]
async fn a_users_live_channel_is_freed_when_their_last_stream_closes() {
    let server = Server::started().await;
    let mut sockets = Vec::new();
    for n in 0..200 {
        let mut socket = server.connect(&format!("user-{n}"), None).await;
        hello(&next_frame(&mut socket).await);
        sockets.push(socket);
    }
    let mut sse = Events::open(&server, "user-0", None).await;
    sse.next().await;
    assert_eq!(server.inbox.live_channels(), 200);
    for mut socket in sockets {
        socket.close(None).await.unwrap();
    }
    eventually("only user-0's SSE stream holds a channel", || {
        server.inbox.live_channels() == 1
    })
    .await;
    drop(sse);
    eventually("no channel is held", || server.inbox.live_channels() == 0).await;
    assert_eq!(server.open_connections("websocket"), 0);
}

/// Several replicas on one PostgreSQL database (issue 13): two `Stores` on
/// one database stand for two processes, each with its own pool, hub and
/// listener; the stream is served by replica A, changes are committed
/// through A and B. What is observed: the frames on A's WebSocket, every
/// change once, in seq order, whichever replica committed it.
mod across_replicas {
    use std::collections::HashSet;
    use std::time::Duration;

    use nudge_control_plane::http::LiveStream;
    use nudge_control_plane::inbox::Action;
    use nudge_control_plane::storage::{
        DatabaseLocation, DatabaseSettings, StorageMetrics, Stores,
    };
    use serde_json::Value;
    use sqlx::Connection as _;

    use super::support::{Backend, fresh_settings};
    use super::{Server, Socket, add_to, assert_quiet, change, hello};

    /// Long enough for a listener's reconnect (backing off) on a loaded
    /// machine; only reached when a change is missing.
    const DEADLINE: Duration = Duration::from_secs(30);

    async fn replica(settings: &DatabaseSettings) -> (tempfile::TempDir, Stores) {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::open(settings, dir.path(), StorageMetrics::new())
            .await
            .unwrap();
        (dir, stores)
    }

    fn url(settings: &DatabaseSettings) -> &str {
        let DatabaseLocation::Postgres(url) = &settings.location else {
            unreachable!("a PostgreSQL location")
        };
        url
    }

    /// Waits until `sessions` connections of this database listen on the
    /// inbox's channel: from then on, a commit is heard, not found by the
    /// listener's catch-up after connecting.
    async fn listening(settings: &DatabaseSettings, sessions: i64) {
        let mut admin = sqlx::PgConnection::connect(url(settings)).await.unwrap();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let count: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() \
                 AND query ILIKE '%LISTEN%nudge_inbox%'",
            )
            .fetch_one(&mut admin)
            .await
            .unwrap();
            if count >= sessions {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "listeners never listened"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The next JSON text frame within [`DEADLINE`].
    async fn next_frame(socket: &mut Socket) -> Value {
        super::next_frame_within(socket, DEADLINE).await
    }

    fn seq(frame: &Value) -> u64 {
        frame["seq"].as_u64().unwrap()
    }

    /// Replica A's stream server, replica B's stores, and a WebSocket of
    /// `u1` on A past its hello (cursor 0), once both listen.
    async fn two_replicas() -> (DatabaseSettings, Server, Stores, tempfile::TempDir, Socket) {
        let dir = tempfile::tempdir().unwrap();
        let settings = fresh_settings(Backend::Postgres, dir.path()).await;
        let (dir_a, stores_a) = replica(&settings).await;
        drop(dir);
        let a = Server::serve(dir_a, &stores_a, LiveStream::default()).await;
        let (dir_b, b) = replica(&settings).await;
        listening(&settings, 2).await;
        let mut socket = a.connect("u1", None).await;
        assert_eq!(hello(&next_frame(&mut socket).await), 0);
        (settings, a, b, dir_b, socket)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_gets_every_change_of_another_replica_once_in_order() {
        let (_settings, a, b, _dir_b, mut socket) = two_replicas().await;

        // Committed by B alone: only B's notification can bring it.
        let first = add_to(&b.inbox, "u1", "from b").await;
        let frame = next_frame(&mut socket).await;
        assert_eq!(seq(change(&frame, "added", &first)), 1);
        assert_eq!(frame["counts"]["unread"], 1);
        b.inbox
            .apply(
                "u1",
                std::slice::from_ref(&first),
                Action::Read,
                jiff::Timestamp::now(),
            )
            .await
            .unwrap();
        let frame = next_frame(&mut socket).await;
        assert_eq!(seq(change(&frame, "updated", &first)), 2);
        assert_eq!(frame["counts"]["unread"], 0);

        // Both replicas at once: local changes and notices interleave.
        let per_replica = 25;
        let (on_a, on_b) = tokio::join!(
            async {
                let mut ids = Vec::new();
                for n in 0..per_replica {
                    ids.push(a.add("u1", &format!("a{n}")).await);
                }
                ids
            },
            async {
                let mut ids = Vec::new();
                for n in 0..per_replica {
                    ids.push(add_to(&b.inbox, "u1", &format!("b{n}")).await);
                }
                ids
            },
        );
        let mut expected: HashSet<String> = on_a.into_iter().chain(on_b).collect();
        for want in 3..3 + 2 * per_replica as u64 {
            let frame = next_frame(&mut socket).await;
            assert_eq!(frame["type"], "change", "{frame}");
            assert_eq!(seq(&frame), want, "every seq once, in order: {frame}");
            let id = frame["id"].as_str().unwrap();
            assert!(expected.remove(id), "{id} sent twice or unknown");
        }
        assert!(expected.is_empty());
        assert_quiet(&mut socket).await;
        assert!(
            a.metrics.remote_changes.get() > 0,
            "changes read because B committed them are counted"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn changes_committed_while_the_listener_was_down_arrive_in_order() {
        let (settings, a, b, _dir_b, mut socket) = two_replicas().await;
        let before = add_to(&b.inbox, "u1", "before").await;
        assert_eq!(
            seq(change(&next_frame(&mut socket).await, "added", &before)),
            1
        );

        // A failover or an idle-connection reaper cuts the listeners off,
        // and (for the test) they cannot come back yet: the database takes
        // no new connections, while the replicas' pools keep theirs.
        // Every pooled connection the replicas may need opened first: a
        // query that needs one more while connections are refused would
        // fail. Concurrent reads make each pool open up to its size.
        let users: Vec<String> = (0..8).map(|n| format!("warm-{n}")).collect();
        for inbox in [&a.inbox, &b.inbox] {
            let reads = users.iter().map(|user| inbox.counts(user));
            for read in futures::future::join_all(reads).await {
                read.unwrap();
            }
        }
        let database = url(&settings).rsplit('/').next().unwrap().to_owned();
        let mut admin = sqlx::PgConnection::connect(&nudge_e2e::postgres::server_url())
            .await
            .unwrap();
        let allow =
            |yes: bool| format!("ALTER DATABASE \"{database}\" WITH ALLOW_CONNECTIONS {yes}");
        sqlx::query(sqlx::AssertSqlSafe(allow(false)))
            .execute(&mut admin)
            .await
            .unwrap();
        let listeners = "FROM pg_stat_activity WHERE datname = $1 \
             AND application_name = 'nudge-control-plane listener'";
        let killed: Vec<bool> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT pg_terminate_backend(pid) {listeners}"
        )))
        .bind(&database)
        .fetch_all(&mut admin)
        .await
        .unwrap();
        assert!(!killed.is_empty(), "the listeners have connections to kill");
        loop {
            let left: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) {listeners}")))
                    .bind(&database)
                    .fetch_one(&mut admin)
                    .await
                    .unwrap();
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // Committed by B while nobody listens: no notification reaches A.
        let unheard = add_to(&b.inbox, "u1", "unheard").await;
        // A commits the next change itself: its stream sees seq 3 after 1,
        // and reads the skipped one from the log first.
        let local = a.add("u1", "local").await;
        let frame = next_frame(&mut socket).await;
        assert_eq!(seq(change(&frame, "added", &unheard)), 2);
        let frame = next_frame(&mut socket).await;
        assert_eq!(seq(change(&frame, "added", &local)), 3);
        // Nothing after it tells A of this one, until the listener is back.
        let during = add_to(&b.inbox, "u1", "during").await;
        assert_quiet(&mut socket).await;
        sqlx::query(sqlx::AssertSqlSafe(allow(true)))
            .execute(&mut admin)
            .await
            .unwrap();

        // A's listener reconnects and has every stream read the log.
        let frame = next_frame(&mut socket).await;
        assert_eq!(seq(change(&frame, "added", &during)), 4);
        // And hears B's commits again.
        let after = add_to(&b.inbox, "u1", "after").await;
        let frame = next_frame(&mut socket).await;
        assert_eq!(seq(change(&frame, "added", &after)), 5);
        assert_quiet(&mut socket).await;
    }
}
