//! Load generation: concurrent clients sending a mix of single Segment calls
//! and batches, keeping account of which events the agent acknowledged.
//!
//! An event counts as delivered-by-promise only once the agent answered 2xx
//! for it. Requests that fail (connection refused while the agent restarts,
//! a reset by SIGKILL) are counted but not retried: their events may or may
//! not be stored, and both are correct.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use nudge_e2e::http::{Reply, post_json};

/// How one group of clients behaves.
#[derive(Clone)]
pub struct LoadSpec {
    /// The agent's intake address.
    pub intake: SocketAddr,
    /// Distinguishes this test's ids and users from any other's.
    pub run: String,
    /// Users the events are spread over (all calls carry a `userId`, so the
    /// control plane's per-user admin API can list every one of them).
    pub users: usize,
    /// Events each client sends before it stops; `None`: until `stop`.
    pub events_per_client: Option<usize>,
    /// Let the agent assign ids to some events (read back from its answer)
    /// instead of always sending a client `messageId`. Only sensible when no
    /// request may fail: the id of an unanswered agent-assigned event is
    /// unknown.
    pub agent_assigned_ids: bool,
    /// Panic on the first failed request instead of counting it.
    pub must_succeed: bool,
    /// Bytes of padding in each event's properties.
    pub pad: usize,
}

impl LoadSpec {
    pub fn user_names(&self) -> Vec<String> {
        (0..self.users)
            .map(|u| format!("{}-user-{u}", self.run))
            .collect()
    }
}

/// What one or many clients saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Ids of events answered 2xx.
    pub acked: HashSet<String>,
    /// Ids of every event sent with a client id, answered or not.
    pub attempted: HashSet<String>,
    /// Requests that got no 2xx.
    pub failed_requests: usize,
    /// The first few failures, for the test's message.
    pub failures: Vec<String>,
}

impl Outcome {
    pub fn merge(&mut self, other: Outcome) {
        self.acked.extend(other.acked);
        self.attempted.extend(other.attempted);
        self.failed_requests += other.failed_requests;
        if self.failures.len() < 5 {
            self.failures.extend(other.failures);
        }
    }
}

/// Shared between clients and the test driving them.
#[derive(Default)]
pub struct Progress {
    /// Events acknowledged so far, over all clients.
    pub acked: AtomicUsize,
    /// Set by the test to end clients without an event budget.
    pub stop: AtomicBool,
}

/// Runs `clients` concurrent clients to completion and merges what they saw.
pub async fn run_clients(spec: &LoadSpec, clients: usize, progress: Arc<Progress>) -> Outcome {
    let http = nudge_e2e::http::client();
    let tasks: Vec<_> = (0..clients)
        .map(|n| tokio::spawn(client(spec.clone(), n, http.clone(), progress.clone())))
        .collect();
    let mut outcome = Outcome::default();
    for task in tasks {
        outcome.merge(task.await.expect("client task panicked"));
    }
    outcome
}

/// One event of `kind`; `id` is the client `messageId`, if any.
pub fn event(kind: &str, user: &str, id: Option<&str>, pad: usize) -> Value {
    let mut event = json!({ "userId": user, "anonymousId": format!("anon-{user}") });
    match kind {
        "track" => {
            event["event"] = json!("E2E Tested");
            event["properties"] = json!({ "pad": "x".repeat(pad), "n": 1 });
        }
        "identify" => event["traits"] = json!({ "pad": "x".repeat(pad), "plan": "pro" }),
        "page" => {
            event["name"] = json!("Home");
            event["properties"] = json!({ "pad": "x".repeat(pad) });
        }
        other => panic!("no such kind {other}"),
    }
    if let Some(id) = id {
        event["messageId"] = json!(id);
    }
    event
}

async fn client(
    spec: LoadSpec,
    n: usize,
    http: reqwest::Client,
    progress: Arc<Progress>,
) -> Outcome {
    let users = spec.user_names();
    let mut outcome = Outcome::default();
    let mut sent = 0usize;
    for round in 0usize.. {
        if progress.stop.load(Ordering::Relaxed) {
            break;
        }
        let budget = spec
            .events_per_client
            .map_or(usize::MAX, |total| total - sent);
        if budget == 0 {
            break;
        }
        let user = &users[(n + round) % users.len()];
        // The shape of this round: three single calls, then a batch.
        let kinds = ["track", "identify", "page", "batch"];
        let kind = kinds[round % kinds.len()];
        let events_in_batch = if kind == "batch" {
            budget.min(5 + (n + round) % 16)
        } else {
            1
        };
        let mut ids = Vec::new();
        let mut events = Vec::new();
        for i in 0..events_in_batch {
            let agent_assigned = spec.agent_assigned_ids && (round + i) % 3 == 0;
            let id = (!agent_assigned).then(|| format!("{}-c{n}-r{round}-{i}", spec.run));
            let event_kind = if kind == "batch" { kinds[i % 3] } else { kind };
            let mut body = event(event_kind, user, id.as_deref(), spec.pad);
            if kind == "batch" {
                body["type"] = json!(event_kind);
            }
            if let Some(id) = &id {
                outcome.attempted.insert(id.clone());
            }
            ids.push(id);
            events.push(body);
        }
        sent += events_in_batch;
        let (path, body) = if kind == "batch" {
            ("/v1/batch".to_owned(), json!({ "batch": events }))
        } else {
            (format!("/v1/{kind}"), events.pop().unwrap())
        };
        let url = format!("http://{}{path}", spec.intake);
        match post_json(&http, &url, &body).await {
            Ok(reply) if reply.is_success() => {
                let answered = answered_ids(&reply, kind == "batch");
                assert_eq!(
                    answered.len(),
                    ids.len(),
                    "{path} answered {} ids for {} events: {:?}",
                    answered.len(),
                    ids.len(),
                    reply.body
                );
                for (sent_id, answered_id) in ids.iter().zip(answered) {
                    if let Some(sent_id) = sent_id {
                        assert_eq!(
                            sent_id, &answered_id,
                            "the agent answered another messageId than the client's"
                        );
                    }
                    assert!(
                        outcome.acked.insert(answered_id.clone()),
                        "id {answered_id} acknowledged twice"
                    );
                }
                progress.acked.fetch_add(ids.len(), Ordering::Relaxed);
            }
            result => {
                let failure = match result {
                    Ok(reply) => format!("{path}: {} {}", reply.status, reply.body),
                    Err(error) => format!("{path}: {error}"),
                };
                assert!(!spec.must_succeed, "request failed: {failure}");
                outcome.failed_requests += 1;
                if outcome.failures.len() < 5 {
                    outcome.failures.push(failure);
                }
                // The agent is probably restarting: do not spin.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    outcome
}

/// The ids a 2xx answer gives: `messageId` for a call, `messageIds` for a batch.
pub fn answered_ids(reply: &Reply, batch: bool) -> Vec<String> {
    let as_string = |v: &Value| {
        v.as_str()
            .unwrap_or_else(|| panic!("id is not a string: {}", reply.body))
            .to_owned()
    };
    assert_eq!(
        reply.body["success"],
        json!(true),
        "2xx without success: true: {:?}",
        reply.body
    );
    if batch {
        reply.body["messageIds"]
            .as_array()
            .unwrap_or_else(|| panic!("batch answer without messageIds: {}", reply.body))
            .iter()
            .map(as_string)
            .collect()
    } else {
        vec![as_string(&reply.body["messageId"])]
    }
}

/// Waits until the clients of `progress` have `at_least` acknowledged
/// events between them.
pub async fn wait_for_acks(progress: &Progress, at_least: usize) {
    super::wait_until(
        &format!("clients have {at_least} acknowledged events"),
        || async { progress.acked.load(Ordering::Relaxed) >= at_least },
    )
    .await;
}
