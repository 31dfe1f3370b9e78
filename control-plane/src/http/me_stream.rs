//! The signed-in user's live stream: inbox changes as they commit, so a
//! badge and every open tab stay in step without polling.
//!
//! * `GET /v1/me/stream` — a WebSocket (JSON text frames);
//! * `GET /v1/me/events` — the same as Server-Sent Events, for clients that
//!   cannot open a WebSocket (each frame is one `data:` line).
//!
//! Both take a bearer header or, since browsers cannot set headers on
//! either, `?ticket=` — a one-minute stream ticket from
//! `POST /v1/me/stream-ticket` (see `user_auth`) — or, discouraged because
//! access logs keep it, the user's token as `?access_token=`; and `?cursor=<seq>` to resume; SSE also
//! honours `Last-Event-ID`, which EventSource sends by itself when it
//! reconnects, and which wins over `cursor`. Frames:
//!
//! * `{"type":"change","seq":…,"at":…,"kind":"added|updated|deleted","id":…,"item":{…},"counts":{…}}`;
//! * `{"type":"hello","cursor":…,"counts":{…}}` — where the stream stands
//!   now; first on a fresh connection, after the missed changes on a
//!   resumed one;
//! * `{"type":"reset","reason":…}` — the changes after the client's cursor
//!   were pruned: reload the list, then carry on from the `hello` after it;
//! * `{"type":"pong"}` — the answer to a client's `{"type":"ping"}`.
//!
//! # Promises
//!
//! * **No gap, no duplicate, on any replica.** The connection subscribes to
//!   the user's live changes *before* it reads the change log, and sends a
//!   live change only when it is the next sequence after the last one it
//!   sent (drops it when at or below). It re-reads the log after that
//!   sequence when it falls behind the live buffer, when a live change
//!   skips sequences, and when it hears that another replica committed
//!   changes (or that its listener reconnected and may have missed some;
//!   see `inbox::store`). So every change after the cursor is sent once,
//!   in order, whichever replica committed it. Changes read from the log
//!   because another replica committed them are counted in
//!   `nudge_cp_live_remote_changes_total`.
//! * **Dead connections are noticed**: the server pings every
//!   [`Heartbeat::ping_every`] and closes a WebSocket that sent nothing
//!   (pong included) for [`Heartbeat::idle_timeout`]; SSE sends `: ping`
//!   comments, whose failed writes end the stream. A client that does not
//!   read is dropped after [`SEND_TIMEOUT`].
//! * **Shutdown ends every stream** (WebSocket close `1001`, SSE end of
//!   body), so the server's graceful drain does not wait for clients.
//! * Client frames other than `ping` are ignored; binary frames, frames
//!   over [`MAX_CLIENT_MESSAGE`] bytes and protocol errors close the
//!   connection.
//! * **Bounded**: a user may hold [`StreamLimits::per_user`] streams and the
//!   process [`StreamLimits::total`] (see `stream_limits`); beyond that the
//!   request is refused before any upgrade, `429 too_many_streams` or
//!   `503 streams_full`, both with `Retry-After`, and counted in
//!   `nudge_cp_live_refused_total{reason}`. A user's live channel is freed
//!   when their last stream closes.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::openapi::responses;
use super::stream_limits::{Admission, Permit, Refused, StreamLimits};
use super::stream_params::{CursorParam, LastEventId, SseEvent, UpgradeHeaders};
use super::user_auth::MeStream;
use super::{ApiError, ErrorBody, HttpState};
use crate::inbox::{Change, Counts, InboxError, InboxStore, Live, Subscription};

/// Largest frame a client may send: it only ever sends `{"type":"ping"}`.
pub const MAX_CLIENT_MESSAGE: usize = 4 * 1024;
/// Longest a frame may wait for a client that does not read.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The WebSocket's read buffer: clients only send tiny frames.
const READ_BUFFER: usize = 4 * 1024;
/// Changes read from the log per step while catching up.
const CATCH_UP_PAGE: usize = 200;
/// What a refused client is told to wait: streams close all the time, so
/// a slot is likely free soon.
const REFUSED_RETRY_AFTER_SECS: u64 = 10;

/// What the live routes need besides the inbox.
#[derive(Clone)]
pub struct LiveStream {
    /// Cancelled when the server stops: every stream ends, so the HTTP
    /// server's graceful shutdown is not held open by idle clients.
    pub shutdown: CancellationToken,
    pub heartbeat: Heartbeat,
    pub metrics: LiveMetrics,
    /// Open streams per user and in total, against their caps.
    pub admission: Admission,
}

impl LiveStream {
    /// Default heartbeat, `limits`, ending on `shutdown`, with metrics
    /// registered in `registry`.
    pub fn new(
        shutdown: CancellationToken,
        limits: StreamLimits,
        registry: &Registry,
    ) -> Result<Self, prometheus::Error> {
        let metrics = LiveMetrics::default();
        metrics.register(registry)?;
        Ok(LiveStream {
            shutdown,
            heartbeat: Heartbeat::default(),
            metrics,
            admission: Admission::new(limits),
        })
    }
}

impl Default for LiveStream {
    /// Never shut down, default limits, unregistered metrics: for tests and
    /// tools.
    fn default() -> Self {
        LiveStream {
            shutdown: CancellationToken::new(),
            heartbeat: Heartbeat::default(),
            metrics: LiveMetrics::default(),
            admission: Admission::default(),
        }
    }
}

/// Keep-alive timing.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    /// Server pings (WebSocket) and `: ping` comments (SSE): often enough
    /// for proxies that cut idle connections after 60 s.
    pub ping_every: Duration,
    /// A WebSocket that sent nothing for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            ping_every: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// The stream's metrics; `transport` is `websocket` or `sse`.
#[derive(Clone)]
pub struct LiveMetrics {
    /// Open live connections.
    pub connections: IntGaugeVec,
    /// Frames sent (changes, hello, reset, pong), heartbeats excluded.
    pub messages: IntCounterVec,
    /// Streams refused by a cap; `reason` is `per_user` or `total`.
    pub refused: IntCounterVec,
    /// Changes sent that were read from the log because another replica
    /// committed them (or the listener reconnected): cross-replica fan-out
    /// at work. Counted per stream that sent them.
    pub remote_changes: IntCounter,
}

impl Default for LiveMetrics {
    fn default() -> Self {
        LiveMetrics {
            connections: IntGaugeVec::new(
                Opts::new(
                    "nudge_cp_live_connections",
                    "Open live-stream connections of end users.",
                ),
                &["transport"],
            )
            .expect("valid metric"),
            messages: IntCounterVec::new(
                Opts::new(
                    "nudge_cp_live_messages_total",
                    "Frames sent on live streams (heartbeats excluded).",
                ),
                &["transport"],
            )
            .expect("valid metric"),
            refused: IntCounterVec::new(
                Opts::new(
                    "nudge_cp_live_refused_total",
                    "Live streams refused because a connection cap was reached.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            remote_changes: IntCounter::new(
                "nudge_cp_live_remote_changes_total",
                "Changes sent on live streams that were read from the change log because another replica committed them.",
            )
            .expect("valid metric"),
        }
    }
}

impl LiveMetrics {
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.connections.clone()))?;
        registry.register(Box::new(self.messages.clone()))?;
        registry.register(Box::new(self.refused.clone()))?;
        registry.register(Box::new(self.remote_changes.clone()))
    }
}

const WEBSOCKET: &str = "websocket";
const SSE: &str = "sse";

/// Counts a connection as open while it lives.
struct Open {
    metrics: LiveMetrics,
    transport: &'static str,
}

impl Open {
    fn new(metrics: &LiveMetrics, transport: &'static str) -> Self {
        metrics.connections.with_label_values(&[transport]).inc();
        Open {
            metrics: metrics.clone(),
            transport,
        }
    }

    fn sent(&self) {
        self.metrics
            .messages
            .with_label_values(&[self.transport])
            .inc();
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.metrics
            .connections
            .with_label_values(&[self.transport])
            .dec();
    }
}

pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/stream", get(websocket))
        .route("/events", get(sse))
        .route("/stream-ticket", post(super::user_auth::stream_ticket))
}

// ---------------------------------------------------------------------------
// The feed: what both transports send, in order.

/// A server frame of the live stream (a WebSocket text frame, or one SSE
/// `data:` line).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
#[schema(as = StreamFrame)]
pub(crate) enum Frame {
    /// First on a fresh connection; after the missed changes on a resumed
    /// one.
    Hello {
        /// Where the stream stands now: resume from here.
        cursor: u64,
        counts: Counts,
    },
    /// A change to the user's inbox, as it commits.
    Change(Box<Change>),
    /// The changes after the client's cursor were pruned: reload the list,
    /// then carry on from the `hello` that follows.
    Reset { reason: &'static str },
    /// The answer to a client's `{"type":"ping"}`.
    Pong,
}

/// One frame ready to send: its JSON, and for a change its sequence (the
/// SSE event id).
struct Outgoing {
    seq: Option<u64>,
    json: String,
}

impl From<Frame> for Outgoing {
    fn from(frame: Frame) -> Self {
        let seq = match &frame {
            Frame::Change(change) => Some(change.seq),
            _ => None,
        };
        Outgoing {
            seq,
            json: serde_json::to_string(&frame).expect("frames serialise"),
        }
    }
}

/// A user's changes after a cursor, then live: see the module's promises.
/// [`Feed::next`] is cancel-safe (state changes only after its awaits), so
/// it can sit in a `select!`.
struct Feed {
    inbox: InboxStore,
    user: String,
    live: Subscription,
    /// The stream's slot under the connection caps, held while it lives.
    _admitted: Option<Permit>,
    /// The last sequence sent (or the stream's start): live changes at or
    /// below it were sent already.
    sent: u64,
    /// Reading the change log after `sent` until it is exhausted (the
    /// backlog of a resume, after falling behind the live buffer, or
    /// changes committed elsewhere).
    catching_up: bool,
    /// The catch-up under way is for changes another replica committed:
    /// what it reads counts in `remote`.
    elsewhere: bool,
    /// `nudge_cp_live_remote_changes_total`, when the stream is served.
    remote: Option<IntCounter>,
    /// Send `hello` once the catch-up is done (the first one only).
    hello_due: bool,
    pending: VecDeque<Frame>,
}

impl Feed {
    /// Subscribes first, then reads where to start.
    async fn open(
        inbox: InboxStore,
        user: String,
        cursor: Option<u64>,
    ) -> Result<Self, InboxError> {
        let live = inbox.subscribe(&user);
        let gap = match cursor {
            Some(cursor) => inbox.resume_gap(&user, cursor).await?,
            None => false,
        };
        let last = inbox.last_seq(&user).await?;
        let mut pending = VecDeque::new();
        let sent = match cursor {
            Some(_) if gap => {
                pending.push_back(Frame::Reset {
                    reason: "changes after the cursor are gone (pruned, or the inbox was erased); reload the list",
                });
                last
            }
            Some(cursor) => cursor,
            None => last,
        };
        Ok(Feed {
            inbox,
            user,
            live,
            _admitted: None,
            sent,
            // Fresh and reset streams start at the log's end: nothing to
            // read, but the same path sends hello.
            catching_up: true,
            elsewhere: false,
            remote: None,
            hello_due: true,
            pending,
        })
    }

    async fn next(&mut self) -> Result<Frame, InboxError> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return Ok(frame);
            }
            if self.catching_up {
                self.catch_up().await?;
                continue;
            }
            match self.live.recv().await {
                Ok(Live::Change(change)) if change.seq <= self.sent => {}
                Ok(Live::Change(change)) if change.seq == self.sent + 1 => {
                    self.sent = change.seq;
                    return Ok(Frame::Change(change));
                }
                // Seqs between were committed by another replica and are
                // in the log (they committed before this one).
                Ok(Live::Change(_)) => self.catch_up_elsewhere(),
                Ok(Live::Elsewhere { upto: Some(upto) }) if upto <= self.sent => {}
                Ok(Live::Elsewhere { .. }) => self.catch_up_elsewhere(),
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(user_id = %self.user, missed, "live stream lagged; reading the change log");
                    self.catching_up = true;
                }
                Err(RecvError::Closed) => {
                    self.live = self.inbox.subscribe(&self.user);
                    self.catching_up = true;
                }
            }
        }
    }

    fn catch_up_elsewhere(&mut self) {
        self.catching_up = true;
        self.elsewhere = true;
    }

    /// One page of the log after `sent`; the hello when it is exhausted.
    async fn catch_up(&mut self) -> Result<(), InboxError> {
        let page = self
            .inbox
            .changes_after(&self.user, self.sent, CATCH_UP_PAGE)
            .await?;
        let counts = if page.len() < CATCH_UP_PAGE && self.hello_due {
            Some(self.inbox.counts(&self.user).await?)
        } else {
            None
        };
        if self.elsewhere
            && let Some(remote) = &self.remote
        {
            remote.inc_by(u64::try_from(page.len()).unwrap_or(u64::MAX));
        }
        if page.len() < CATCH_UP_PAGE {
            self.catching_up = false;
            self.elsewhere = false;
        }
        for change in page {
            self.sent = self.sent.max(change.seq);
            self.pending.push_back(Frame::Change(Box::new(change)));
        }
        if let Some(counts) = counts {
            self.hello_due = false;
            self.pending.push_back(Frame::Hello {
                cursor: self.sent,
                counts,
            });
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Requests

/// `cursor` from the query (other parameters, e.g. `access_token`, are the
/// extractors').
fn cursor_param(raw: Option<&str>) -> Result<Option<u64>, ApiError> {
    let pairs = super::form::parse(raw.unwrap_or_default().as_bytes())
        .map_err(|error| ApiError::bad_request(error.to_string()))?;
    let mut cursor = None;
    for (key, value) in pairs {
        if key == "cursor" {
            cursor = Some(parse_cursor(&value, "cursor")?);
        }
    }
    Ok(cursor)
}

fn parse_cursor(text: &str, what: &str) -> Result<u64, ApiError> {
    text.trim().parse().map_err(|_| {
        ApiError::bad_request(format!(
            "{what}: expected the seq of a change (a whole number)"
        ))
    })
}

/// Admits the stream under the caps, then opens its feed: the one way in
/// for both transports.
async fn open_feed(state: &HttpState, user: String, cursor: Option<u64>) -> Result<Feed, ApiError> {
    let permit = state.live.admission.admit(&user).map_err(|refused| {
        state
            .live
            .metrics
            .refused
            .with_label_values(&[refused.reason()])
            .inc();
        tracing::info!(reason = refused.reason(), "live stream refused");
        ApiError::from(refused)
    })?;
    let mut feed = Feed::open(state.inbox.clone(), user, cursor).await?;
    feed._admitted = Some(permit);
    feed.remote = Some(state.live.metrics.remote_changes.clone());
    Ok(feed)
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        let (status, code) = match refused {
            Refused::PerUser(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_streams"),
            Refused::Total(_) => (StatusCode::SERVICE_UNAVAILABLE, "streams_full"),
        };
        ApiError::new(status, code, refused.to_string()).retry_after(REFUSED_RETRY_AFTER_SECS)
    }
}

// ---------------------------------------------------------------------------
// WebSocket

/// `MeStream` comes first: a bad token is a 401 before any upgrade.
#[utoipa::path(
    get,
    path = "/v1/me/stream",
    operation_id = "openMyLiveStream",
    summary = "The live stream over WebSocket",
    description = "Inbox changes as they commit. Authenticate with `Authorization: Bearer` or, since browsers cannot set headers on WebSocket or EventSource, `?ticket=` (a 60 s ticket from `POST /v1/me/stream-ticket`); `?access_token=` (the user's token itself) still works but is discouraged: access logs keep it. Resume with `?cursor=<seq>` (the last `seq` or `hello.cursor` seen).\n\nServer frames (JSON, see `StreamFrame`): `hello` — where the stream stands now (first on a fresh connection, after the missed changes on a resumed one); `change` — one inbox change with the counts after it; `reset` — the changes after the cursor were pruned: reload the list, carry on from the `hello` after it; `pong` — the answer to a client's `{\"type\":\"ping\"}`.\n\nPromises: every change after the cursor is sent once, in order (no gap, no duplicate); shutdown ends every stream; a client that does not read is dropped after 10 s. WebSocket: the server pings every 25 s and closes a connection that sent nothing (pong included) for 60 s; binary frames, frames over 4 KiB and protocol errors close it; shutdown closes with `1001`. A request that is not a WebSocket upgrade is a JSON `400 bad_request` saying what is missing. Connections are capped per user (`NUDGE_CP_LIVE_MAX_STREAMS_PER_USER`, else `429 too_many_streams`) and in total (`NUDGE_CP_LIVE_MAX_STREAMS`, else `503 streams_full`), both refused before any upgrade and with `Retry-After`.",
    tags = ["me", "stream"],
    security(("userToken" = []), ("streamTicket" = []), ("userAccessToken" = [])),
    params(CursorParam, UpgradeHeaders),
    responses(
        (status = 101, body = Frame, description = "Switching Protocols: a WebSocket whose text frames are `StreamFrame`s (server) and `ClientFrame`s (client)."),
        (status = 400, body = ErrorBody, description = "`bad_request`: not a WebSocket upgrade request (the message says what is missing), or a bad `cursor`."),
        responses::StreamErrors,
    ),
)]
pub(crate) async fn websocket(
    State(state): State<HttpState>,
    MeStream(user): MeStream,
    RawQuery(raw): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // axum's refusal is plain text; the API answers every error in JSON.
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::bad_request(format!(
            "this route is a WebSocket: send an upgrade request \
             (Connection: Upgrade, Upgrade: websocket, Sec-WebSocket-Version: 13, \
             Sec-WebSocket-Key), or use GET /v1/me/events for Server-Sent Events ({})",
            rejection.body_text()
        ))
    })?;
    let cursor = cursor_param(raw.as_deref())?;
    // Subscribed before the upgrade: the backlog is exact from the moment
    // the client is told it is connected.
    let feed = open_feed(&state, user, cursor).await?;
    let live = state.live.clone();
    Ok(upgrade
        // Idle connections are the common case: small buffers keep each
        // one cheap (tungstenite's defaults are 128 KiB each way); every
        // send flushes anyway.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_failed_upgrade(|error| tracing::debug!(%error, "websocket upgrade failed"))
        .on_upgrade(move |socket| serve_websocket(socket, feed, live))
        .into_response())
}

/// Why a WebSocket loop ended, and the close frame to send, if any.
enum End {
    Close(u16, &'static str),
    /// The client is gone or closed itself.
    Gone,
}

async fn serve_websocket(mut socket: WebSocket, mut feed: Feed, live: LiveStream) {
    let open = Open::new(&live.metrics, WEBSOCKET);
    let mut ping = tokio::time::interval_at(
        Instant::now() + live.heartbeat.ping_every,
        live.heartbeat.ping_every,
    );
    let mut heard = Instant::now();
    let end = loop {
        let outgoing = tokio::select! {
            () = live.shutdown.cancelled() => break End::Close(close_code::AWAY, "server shutting down"),
            frame = feed.next() => match frame {
                Ok(frame) => Outgoing::from(frame),
                Err(error) => {
                    tracing::warn!(user_id = %feed.user, %error, "live stream failed");
                    break End::Close(close_code::ERROR, "inbox unavailable");
                }
            },
            received = socket.recv() => {
                heard = Instant::now();
                match received {
                    Some(Ok(Message::Text(text))) => match serde_json::from_str::<ClientFrame>(&text) {
                        Ok(ClientFrame { kind }) if kind == "ping" => Outgoing::from(Frame::Pong),
                        // Unknown frames are ignored: newer clients may
                        // send what this server does not know yet.
                        _ => continue,
                    },
                    Some(Ok(Message::Binary(_))) => break End::Close(close_code::UNSUPPORTED, "binary frames are not accepted"),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => break End::Gone,
                    Some(Err(error)) => {
                        tracing::debug!(%error, "websocket receive failed");
                        break End::Close(close_code::POLICY, "protocol error or frame too large");
                    }
                }
            }
            _ = ping.tick() => {
                if heard.elapsed() >= live.heartbeat.idle_timeout {
                    break End::Close(close_code::AWAY, "no pong");
                }
                if !send(&mut socket, Message::Ping(Default::default()), &live.shutdown).await {
                    break End::Gone;
                }
                continue;
            }
        };
        if !send(
            &mut socket,
            Message::Text(outgoing.json.into()),
            &live.shutdown,
        )
        .await
        {
            break End::Gone;
        }
        open.sent();
    };
    if let End::Close(code, reason) = end {
        let close = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        // Best effort, and bounded: the client may be gone already.
        let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(close)).await;
    }
}

/// Sends `message` unless the client does not read for [`SEND_TIMEOUT`] or
/// the server stops; `false` when it was not sent.
async fn send(socket: &mut WebSocket, message: Message, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        sent = tokio::time::timeout(SEND_TIMEOUT, socket.send(message)) => matches!(sent, Ok(Ok(()))),
    }
}

/// The only frame a client sends (at most 4 KiB); others are ignored,
/// binary frames close the connection.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct ClientFrame {
    // Any `type` is read (and ignored unless `ping`), but `ping` is the
    // one the API offers.
    #[serde(rename = "type")]
    #[schema(schema_with = ping)]
    kind: String,
}

fn ping() -> utoipa::openapi::Object {
    super::openapi::string_enum(["ping"])
}

// ---------------------------------------------------------------------------
// Server-Sent Events

#[utoipa::path(
    get,
    path = "/v1/me/events",
    operation_id = "streamMyEvents",
    summary = "The live stream as Server-Sent Events",
    description = "Inbox changes as they commit. Authenticate with `Authorization: Bearer` or, since browsers cannot set headers on WebSocket or EventSource, `?ticket=` (a 60 s ticket from `POST /v1/me/stream-ticket`); `?access_token=` (the user's token itself) still works but is discouraged: access logs keep it. Resume with `?cursor=<seq>` (the last `seq` or `hello.cursor` seen).\n\nServer frames (JSON, see `StreamFrame`): `hello` — where the stream stands now (first on a fresh connection, after the missed changes on a resumed one); `change` — one inbox change with the counts after it; `reset` — the changes after the cursor were pruned: reload the list, carry on from the `hello` after it; `pong` — the answer to a client's `{\"type\":\"ping\"}`.\n\nPromises: every change after the cursor is sent once, in order (no gap, no duplicate); shutdown ends every stream; a client that does not read is dropped after 10 s. For clients that cannot open a WebSocket. Connections are capped per user (`NUDGE_CP_LIVE_MAX_STREAMS_PER_USER`, else `429 too_many_streams`) and in total (`NUDGE_CP_LIVE_MAX_STREAMS`, else `503 streams_full`), both refused before any upgrade and with `Retry-After`.",
    tags = ["me", "stream"],
    security(("userToken" = []), ("streamTicket" = []), ("userAccessToken" = [])),
    params(CursorParam, LastEventId),
    responses(
        (status = 200, content_type = "text/event-stream", body = inline(SseEvent),
         description = "An endless `text/event-stream`: each frame is one `data:` line holding a `StreamFrame`; change frames carry `id: <seq>`; `:ping` comments every 25 s keep proxies open."),
        (status = 400, response = responses::BadRequest),
        responses::StreamErrors,
    ),
)]
pub(crate) async fn sse(
    State(state): State<HttpState>,
    MeStream(user): MeStream,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let mut cursor = cursor_param(raw.as_deref())?;
    if let Some(value) = headers.get("last-event-id") {
        let text = value
            .to_str()
            .map_err(|_| ApiError::bad_request("Last-Event-ID: not text"))?;
        if !text.trim().is_empty() {
            cursor = Some(parse_cursor(text, "Last-Event-ID")?);
        }
    }
    let feed = open_feed(&state, user, cursor).await?;
    let live = state.live.clone();
    let open = Open::new(&live.metrics, SSE);
    let events = futures::stream::unfold(
        (feed, live.shutdown.clone(), open),
        |(mut feed, shutdown, open)| async move {
            let frame = tokio::select! {
                () = shutdown.cancelled() => return None,
                frame = feed.next() => frame,
            };
            let outgoing = match frame {
                Ok(frame) => Outgoing::from(frame),
                Err(error) => {
                    tracing::warn!(user_id = %feed.user, %error, "live stream failed");
                    return None;
                }
            };
            let mut event = Event::default().data(outgoing.json);
            if let Some(seq) = outgoing.seq {
                event = event.id(seq.to_string());
            }
            open.sent();
            Some((Ok(event), (feed, shutdown, open)))
        },
    );
    Ok(Sse::new(events).keep_alive(
        KeepAlive::new()
            .interval(live.heartbeat.ping_every)
            .text("ping"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbox::{Action, ChangeKind, InboxItem};

    async fn inbox() -> (tempfile::TempDir, InboxStore) {
        let dir = tempfile::tempdir().unwrap();
        let stores = crate::storage::Stores::open_embedded(dir.path())
            .await
            .unwrap();
        (dir, stores.inbox)
    }

    async fn add(inbox: &InboxStore, user: &str, n: usize) -> String {
        let id = format!("{n:08}");
        let item = InboxItem {
            id: id.clone(),
            notification_id: id.clone(),
            notification_type: "t".into(),
            category: None,
            title: "title".into(),
            body: "body".into(),
            data: serde_json::Value::Null,
            created_at: jiff::Timestamp::now(),
            seen_at: None,
            read_at: None,
            archived_at: None,
            snoozed_until: None,
        };
        assert!(inbox.add(user, &item).await.unwrap());
        id
    }

    fn seq_of(frame: &Frame) -> u64 {
        match frame {
            Frame::Change(change) => change.seq,
            _ => panic!("not a change"),
        }
    }

    /// A subscriber that falls far behind the live buffer re-reads the log:
    /// every change once, in order, then live again.
    #[tokio::test]
    async fn a_lagging_feed_catches_up_from_the_log() {
        let (_dir, inbox) = inbox().await;
        let mut feed = Feed::open(inbox.clone(), "u1".into(), None).await.unwrap();
        assert!(matches!(
            feed.next().await.unwrap(),
            Frame::Hello { cursor: 0, .. }
        ));
        // Well past the hub's buffer of 256 changes per user.
        let total = 1000;
        let mut ids = Vec::new();
        for n in 0..total {
            ids.push(add(&inbox, "u1", n).await);
        }
        let mut last = 0;
        for id in &ids {
            let frame = feed.next().await.unwrap();
            let Frame::Change(change) = &frame else {
                panic!("expected a change")
            };
            assert_eq!((&change.id, change.kind), (id, ChangeKind::Added));
            assert!(change.seq > last);
            last = change.seq;
        }
        // Nothing more is pending: the live changes the lag left in the
        // buffer were all sent from the log already.
        let read = ids[0].clone();
        inbox
            .apply("u1", &[read], Action::Read, jiff::Timestamp::now())
            .await
            .unwrap();
        let frame = feed.next().await.unwrap();
        assert!(seq_of(&frame) > last);
        let quiet = tokio::time::timeout(Duration::from_millis(50), feed.next()).await;
        assert!(quiet.is_err(), "a duplicate was sent");
    }

    /// A resume whose backlog spans several pages sends it all, then hello.
    #[tokio::test]
    async fn a_long_backlog_is_sent_in_pages_then_hello() {
        let (_dir, inbox) = inbox().await;
        let total = CATCH_UP_PAGE * 2 + 7;
        for n in 0..total {
            add(&inbox, "u1", n).await;
        }
        add(&inbox, "u2", 0).await;
        let mut feed = Feed::open(inbox.clone(), "u1".into(), Some(0))
            .await
            .unwrap();
        let mut last = 0;
        for _ in 0..total {
            let seq = seq_of(&feed.next().await.unwrap());
            assert!(seq > last);
            last = seq;
        }
        match feed.next().await.unwrap() {
            Frame::Hello { cursor, counts } => {
                assert_eq!(cursor, last);
                assert_eq!(counts.unread, total as u64);
            }
            _ => panic!("expected hello"),
        }
    }
}
