//! Scenario 8, the live stream (issue 4, "Live stream"): how long an event
//! tracked at the agent takes to appear as a notification frame on the
//! user's WebSocket, and what holding many idle WebSockets costs the
//! control plane.
//!
//! One control plane runs an engine TOML with one in-app type and a rule
//! `bench_event` → it, and a user-token secret; an agent ships to it. One
//! client holds `/v1/me/stream` open for the user; N `/v1/track` calls go
//! to the agent, one every [`PACE`] (so they measure latency, not a
//! queue), each carrying its index in `properties.n`, which the in-app
//! item's `data` carries back. Then C idle WebSockets are opened across U
//! users and held while the control plane's RSS is read.
//!
//! Promises: a latency is the time from just before the track call to the
//! arrival of the `added` frame whose `data.n` is that call's index,
//! measured in this process (one clock), so it includes the agent's
//! intake and batching, gRPC, the rule, the delivery queue and the in-app
//! channel; p50/p99 are exact over the N samples. A frame missing after
//! 60 s fails the scenario. RSS is VmRSS before the first idle connection
//! and once all C have their `hello`; the gauge
//! `nudge_cp_live_connections` is read at the same moment to show the
//! server holds them all.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::procstat::memory;
use super::{Env, Result};
use crate::metrics::metric_value;
use crate::{Agent, ControlPlane};

/// Between track calls: paced, so the figures are latency, not queueing.
const PACE: Duration = Duration::from_millis(5);
const FRAME_LIMIT: Duration = Duration::from_secs(60);
const TOKEN_SECRET: &str = "bench-user-token-secret-0123456789abcdef";
/// Tabs (idle connections) per user: within the control plane's default
/// per-user cap (`NUDGE_CP_LIVE_MAX_STREAMS_PER_USER`, 16), which refuses
/// more with 429.
const TABS_PER_USER: usize = 4;
/// WebSocket handshakes in flight while opening the idle connections.
const OPENING: usize = 64;

const ENGINE: &str = r#"
[types.bench_stream]
channels = ["in_app"]
critical = true
frequency = "instant"

[types.bench_stream.templates.fallback]
title = "Bench notification {{ data.n }}"
text = "This is notification {{ data.n }}."

[[rules]]
name = "bench-stream"
on = "bench_event"
notify = "bench_stream"
"#;

pub struct StreamReport {
    pub notifications: usize,
    /// Per notification, track call to frame.
    pub latencies: Vec<Duration>,
    pub idle_connections: usize,
    pub idle_users: usize,
    pub open_seconds: f64,
    pub rss_before: u64,
    pub rss_after: u64,
    /// `nudge_cp_live_connections{transport="websocket"}` with the idle
    /// connections open.
    pub gauge: f64,
}

/// An HS256 user token, as an application's backend signs it.
fn user_token(user: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        + 3600;
    let payload = URL_SAFE_NO_PAD.encode(json!({"sub": user, "exp": exp}).to_string());
    let input = format!("{header}.{payload}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, TOKEN_SECRET.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(ring::hmac::sign(&key, input.as_bytes()));
    format!("{input}.{signature}")
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(cp: &ControlPlane, user: &str) -> Result<Socket> {
    let url = format!(
        "ws://{}/v1/me/stream?access_token={}",
        cp.http,
        user_token(user)
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
    // Connected once the hello is there.
    loop {
        match tokio::time::timeout(FRAME_LIMIT, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) if text.contains("\"hello\"") => return Ok(socket),
            Ok(Some(Ok(_))) => {}
            other => return Err(format!("no hello on the stream: {other:?}").into()),
        }
    }
}

pub async fn scenario_stream(env: &Env) -> Result<StreamReport> {
    let notifications = env.options.stream_notifications;
    let idle_connections = env.options.stream_connections;
    let idle_users = idle_connections.div_ceil(TABS_PER_USER).max(1);
    let config = env.setup.data_dir("stream-config")?;
    let path = config.path().join("nudge.toml");
    std::fs::write(&path, ENGINE)?;
    let path_text = path.display().to_string();
    let mut cp = ControlPlane::new(&env.setup)?.with_env([
        ("NUDGE_CP_CONFIG", path_text.as_str()),
        ("NUDGE_CP_USER_TOKEN_SECRET", TOKEN_SECRET),
    ]);
    cp.start().await?;
    let agent = Agent::started(&env.setup, &cp.grpc_url(), &[]).await?;

    // Latency: one listener, paced track calls.
    let mut socket = connect(&cp, "bench-stream-user").await?;
    let receiver = tokio::spawn(async move {
        let mut arrived: HashMap<u64, Instant> = HashMap::new();
        while arrived.len() < notifications {
            let message = match tokio::time::timeout(FRAME_LIMIT, socket.next()).await {
                Ok(Some(Ok(message))) => message,
                other => return Err(format!("stream ended or stalled: {other:?}")),
            };
            let Message::Text(text) = message else {
                continue;
            };
            let at = Instant::now();
            let frame: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            if frame["type"] == "change"
                && frame["kind"] == "added"
                && let Some(n) = frame["item"]["data"]["n"].as_u64()
            {
                arrived.insert(n, at);
            }
        }
        Ok((arrived, socket))
    });
    let mut sent_at = Vec::with_capacity(notifications);
    let mut pace = tokio::time::interval(PACE);
    for n in 0..notifications {
        pace.tick().await;
        let body = json!({
            "userId": "bench-stream-user",
            "event": "bench_event",
            "messageId": format!("bench-stream-{n}"),
            "properties": {"n": n},
        });
        sent_at.push(Instant::now());
        let reply = agent.post("/v1/track", &body).await?;
        if !reply.is_success() {
            return Err(format!("track {n}: {reply:?}").into());
        }
    }
    let (arrived, socket) = receiver.await?.map_err(|e| format!("latency run: {e}"))?;
    drop(socket);
    let mut latencies: Vec<Duration> = sent_at
        .iter()
        .enumerate()
        .map(|(n, sent)| arrived[&(n as u64)].saturating_duration_since(*sent))
        .collect();
    latencies.sort_unstable();

    // Idle connections.
    let pid = cp.process.pid();
    let rss_before = memory(pid).0;
    let started = Instant::now();
    let mut held = Vec::with_capacity(idle_connections);
    let mut opening = futures::stream::iter(0..idle_connections)
        .map(|i| {
            let cp = &cp;
            async move { connect(cp, &format!("bench-idle-{}", i % idle_users)).await }
        })
        .buffer_unordered(OPENING);
    while let Some(socket) = opening.next().await {
        held.push(socket?);
    }
    drop(opening);
    let open_seconds = started.elapsed().as_secs_f64();
    // Let the server settle its buffers before reading.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = memory(pid).0;
    let gauge = metric_value(
        &cp.metrics().await?,
        "nudge_cp_live_connections",
        Some("transport=\"websocket\""),
    )
    .unwrap_or(f64::NAN);
    drop(held);
    Ok(StreamReport {
        notifications,
        latencies,
        idle_connections,
        idle_users,
        open_seconds,
        rss_before,
        rss_after,
        gauge,
    })
}

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

impl StreamReport {
    pub fn to_json(&self) -> Value {
        json!({
            "notifications": self.notifications,
            "pace_ms": PACE.as_secs_f64() * 1000.0,
            "latency_p50_ms": percentile_ms(&self.latencies, 50.0),
            "latency_p99_ms": percentile_ms(&self.latencies, 99.0),
            "latency_max_ms": percentile_ms(&self.latencies, 100.0),
            "idle_connections": self.idle_connections,
            "idle_users": self.idle_users,
            "open_seconds": self.open_seconds,
            "cp_rss_before_bytes": self.rss_before,
            "cp_rss_after_bytes": self.rss_after,
            "cp_rss_per_connection_bytes": self.per_connection(),
            "live_connections_gauge": self.gauge,
        })
    }

    fn per_connection(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.idle_connections.max(1) as f64
    }
}

pub fn render(report: &StreamReport) -> String {
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "live stream: /v1/track at the agent -> rule -> in-app -> `added` frame on /v1/me/stream ({} events, one every {} ms)",
        report.notifications,
        PACE.as_millis()
    );
    let _ = writeln!(
        out,
        "  latency p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
        percentile_ms(&report.latencies, 50.0),
        percentile_ms(&report.latencies, 99.0),
        percentile_ms(&report.latencies, 100.0),
    );
    let _ = writeln!(
        out,
        "  idle WebSockets: {} across {} users, opened in {:.1} s; server gauge {}",
        report.idle_connections, report.idle_users, report.open_seconds, report.gauge
    );
    let _ = writeln!(
        out,
        "  control plane RSS {:.1} MiB -> {:.1} MiB ({:.1} KiB per connection)",
        mib(report.rss_before),
        mib(report.rss_after),
        report.per_connection() / 1024.0
    );
    out
}
