//! The broadcast section's population and how it gets into the control
//! plane: who the users are, which preferences they have, the engine
//! TOML, the seeding over the admin HTTP API, and the baseline's notifies
//! pushed to Ingest over gRPC.
//!
//! User `i` (ids `bcast-0000000` …, so id order is index order, the order
//! the fan-out walks) is [`Kind::OptedOut`] when `i % 10 == 0`,
//! [`Kind::Quiet`] when `i % 10` is 1 or 2, [`Kind::Plain`] otherwise: the
//! groups are interleaved, so every page of the fan-out holds all three.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nudge_proto::v1::envelope::Body;
use nudge_proto::v1::ingest_client::IngestClient;
use nudge_proto::v1::{Envelope, Notify, PushRequest};
use serde_json::{Value, json};

use super::Admin;
use crate::bench::Result;

/// The type every notification of the section has.
pub const TYPE: &str = "announcement";
/// The topic every user is subscribed to.
pub const TOPIC: &str = "bench-news";
/// Concurrent callers of the admin API while seeding.
pub const WORKERS: usize = 32;
/// The engine's in-app send slots (the `notify` section's figure too).
pub const IN_APP_SLOTS: usize = 256;
/// Notifies per push and concurrent pushers in the baseline, as the
/// `storage` section pushes (an agent's default batch).
pub const PUSH_BATCH: usize = 500;
pub const PUSHERS: usize = 8;
/// Title and body of every notification, the broadcast's and the
/// baseline's alike.
pub const TITLE: &str = "Scheduled maintenance tonight";
pub const BODY: &str = "Nudge will be read-only from 02:00 to 02:30 UTC.";

/// What a user chose, and so what the section expects for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Switched the type's in-app channel off: a notification, no delivery.
    OptedOut,
    /// Quiet hours around now: an in-app delivery held until they end.
    Quiet,
    /// No preferences: an in-app delivery sent at once.
    Plain,
}

impl Kind {
    pub fn of(i: usize) -> Kind {
        match i % 10 {
            0 => Kind::OptedOut,
            1 | 2 => Kind::Quiet,
            _ => Kind::Plain,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::OptedOut => "opted out",
            Kind::Quiet => "quiet hours",
            Kind::Plain => "no preferences",
        }
    }
}

pub fn user(i: usize) -> String {
    format!("bcast-{i:07}")
}

/// How many of the first `users` users are of `kind`.
pub fn count(users: usize, kind: Kind) -> u64 {
    (0..users).filter(|&i| Kind::of(i) == kind).count() as u64
}

/// At most `most` users of `kind` among the first `users`, evenly spread
/// over the whole range (the first and the last pages of the fan-out
/// alike).
pub fn sample(users: usize, kind: Kind, most: usize) -> Vec<usize> {
    let of_kind = count(users, kind) as usize;
    let step = of_kind.div_ceil(most.max(1)).max(1);
    (0..users)
        .filter(|&i| Kind::of(i) == kind)
        .step_by(step)
        .collect()
}

pub fn engine_toml() -> String {
    format!(
        r#"
[concurrency]
in_app = {IN_APP_SLOTS}

[types.{TYPE}]
channels = ["in_app"]
critical = false
frequency = "instant"
category = "product"
"#
    )
}

/// Quiet hours from an hour before now to three hours after (UTC, as
/// `HH:MM`); the window crosses midnight when it must.
pub fn quiet_window() -> (String, String) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let minute_of_day = (now / 60 % 1440) as i64;
    let hhmm = |minute: i64| {
        let minute = minute.rem_euclid(1440);
        format!("{:02}:{:02}", minute / 60, minute % 60)
    };
    (hhmm(minute_of_day - 60), hhmm(minute_of_day + 180))
}

fn preferences(kind: Kind, window: &(String, String)) -> Option<Value> {
    match kind {
        Kind::OptedOut => Some(json!({ "types": { TYPE: { "channels": { "in_app": false } } } })),
        Kind::Quiet => Some(json!({
            "quiet_hours": { "start": window.0, "end": window.1, "timezone": "UTC" }
        })),
        Kind::Plain => None,
    }
}

/// What seeding did.
#[derive(Debug, Clone, Default)]
pub struct Seeded {
    pub subscriptions: u64,
    pub preferences: u64,
    pub secs: f64,
    /// Answers other than 2xx that were retried (a 503 while the store
    /// was busy).
    pub retries: u64,
}

/// Subscribes users `0..users` to [`TOPIC`] and stores the preferences
/// of those who have some, from [`WORKERS`] concurrent callers.
pub async fn seed(admin: &Admin, users: usize, window: &(String, String)) -> Result<Seeded> {
    let next = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let begin = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..WORKERS {
        let (admin, next, retries) = (admin.clone(), Arc::clone(&next), Arc::clone(&retries));
        let window = window.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= users {
                    return Ok::<(), String>(());
                }
                let id = user(i);
                let path = format!("/v1/admin/topics/{TOPIC}/subscribers/{id}");
                retries.fetch_add(
                    admin.put_until_ok(&path, &json!({})).await?,
                    Ordering::Relaxed,
                );
                if let Some(body) = preferences(Kind::of(i), &window) {
                    let path = format!("/v1/admin/users/{id}/preferences");
                    retries.fetch_add(admin.put_until_ok(&path, &body).await?, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|error| error.to_string())??;
    }
    Ok(Seeded {
        subscriptions: users as u64,
        preferences: count(users, Kind::OptedOut) + count(users, Kind::Quiet),
        secs: begin.elapsed().as_secs_f64(),
        retries: retries.load(Ordering::Relaxed),
    })
}

/// The baseline's notify for user `i`: what the broadcast sends them,
/// as one envelope of its own.
fn envelope(run: &str, i: usize) -> Envelope {
    Envelope {
        id: format!("{run}-{i:07}"),
        user_id: user(i),
        body: Some(Body::Notify(Notify {
            r#type: TYPE.to_owned(),
            title: TITLE.to_owned(),
            body: BODY.to_owned(),
            channels: vec!["in_app".to_owned()],
            ..Notify::default()
        })),
        ..Envelope::default()
    }
}

/// Pushes one notify to each of the users `0..users` from [`PUSHERS`]
/// gRPC clients in batches of [`PUSH_BATCH`], as agents do (an
/// UNAVAILABLE answer is retried); returns the seconds until the last
/// push was acknowledged (stored, not yet planned).
pub async fn push_notifies(grpc: &str, token: &str, run: &str, users: usize) -> Result<f64> {
    let authorization: tonic::metadata::AsciiMetadataValue = format!("Bearer {token}")
        .parse()
        .map_err(|error| format!("agent token: {error}"))?;
    let batches = users.div_ceil(PUSH_BATCH);
    let next = Arc::new(AtomicUsize::new(0));
    let begin = Instant::now();
    let mut tasks = Vec::new();
    for pusher in 0..PUSHERS {
        let (next, run, grpc) = (Arc::clone(&next), run.to_owned(), grpc.to_owned());
        let authorization = authorization.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = IngestClient::connect(grpc)
                .await
                .map_err(|error| format!("connect: {error}"))?;
            loop {
                let batch = next.fetch_add(1, Ordering::Relaxed);
                if batch >= batches {
                    return Ok::<(), String>(());
                }
                let (start, end) = (batch * PUSH_BATCH, ((batch + 1) * PUSH_BATCH).min(users));
                let request = PushRequest {
                    agent_id: format!("bench-broadcast-{pusher}"),
                    batch_id: format!("{run}-{batch}"),
                    envelopes: (start..end).map(|i| envelope(&run, i)).collect(),
                    ..PushRequest::default()
                };
                loop {
                    let mut call = tonic::Request::new(request.clone());
                    call.metadata_mut()
                        .insert("authorization", authorization.clone());
                    match client.push(call).await {
                        Ok(_) => break,
                        Err(status) if status.code() == tonic::Code::Unavailable => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(status) => return Err(format!("push: {status}")),
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|error| error.to_string())??;
    }
    Ok(begin.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::{Kind, count, sample, user};

    #[test]
    fn groups_are_interleaved_and_counted() {
        assert_eq!(user(42), "bcast-0000042");
        assert_eq!(count(100, Kind::OptedOut), 10);
        assert_eq!(count(100, Kind::Quiet), 20);
        assert_eq!(count(100, Kind::Plain), 70);
        assert_eq!(count(5, Kind::Quiet), 2);
        let quiet = sample(1000, Kind::Quiet, 10);
        assert_eq!(quiet.len(), 10);
        assert!(quiet.iter().all(|&i| Kind::of(i) == Kind::Quiet));
        assert!(
            *quiet.last().unwrap() > 800,
            "spread over the range: {quiet:?}"
        );
    }
}
