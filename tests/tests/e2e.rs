//! End-to-end tests of issue 2 (the durable event pipeline) against the real
//! binaries: each test starts its own `nudge-control-plane` and `nudge-agent`
//! processes (through the `nudge_e2e` harness and `support`), drives them
//! over HTTP like an application and an operator would, and checks what the
//! pipeline promises.
//!
//! Run `cargo build --bins` first; `scripts/test` does everything.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use nudge_e2e::http::{client as http_client, post_bytes};
use nudge_e2e::metrics::metric_value;
use nudge_e2e::{Agent, ControlPlane};
use support::load::{LoadSpec, Outcome, Progress, event, run_clients, wait_for_acks};
use support::{
    DEADLINE, assert_delivered_exactly_once, binary, installed_tool, run_to_exit, setup,
    wait_until, wait_until_within, workspace_dir,
};

fn spec(agent: &Agent, run: &str) -> LoadSpec {
    LoadSpec {
        intake: agent.intake,
        run: format!("{run}-{}", std::process::id()),
        users: 10,
        events_per_client: None,
        agent_assigned_ids: false,
        must_succeed: true,
        pad: 64,
    }
}

/// Runs the clients described by `spec` in the background.
fn spawn_clients(
    spec: &LoadSpec,
    clients: usize,
    progress: &Arc<Progress>,
) -> tokio::task::JoinHandle<Outcome> {
    let spec = spec.clone();
    let progress = progress.clone();
    tokio::spawn(async move { run_clients(&spec, clients, progress).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_events_from_concurrent_clients_arrive_exactly_once() {
    let control_plane = ControlPlane::started(setup()).await.unwrap();
    let agent = Agent::started(setup(), &control_plane.grpc_url(), &[])
        .await
        .unwrap();
    let spec = LoadSpec {
        users: 20,
        events_per_client: Some(200),
        agent_assigned_ids: true,
        ..spec(&agent, "ten-k")
    };

    let outcome = run_clients(&spec, 50, Arc::default()).await;
    assert_eq!(outcome.acked.len(), 10_000, "every event acknowledged once");

    let stored = assert_delivered_exactly_once(
        &control_plane,
        &agent,
        &spec.user_names(),
        &outcome.acked,
        None,
    )
    .await;
    assert_eq!(
        stored.len(),
        10_000,
        "exactly the acknowledged events are stored"
    );
    let received = agent
        .metric("nudge_agent_events_received_total")
        .await
        .unwrap();
    assert_eq!(received, 10_000.0, "nudge_agent_events_received_total");
    let shipped = agent
        .metric("nudge_agent_events_shipped_total")
        .await
        .unwrap();
    assert!(
        shipped >= 10_000.0,
        "nudge_agent_events_shipped_total is {shipped}"
    );
    let ingested = metric_value(
        &control_plane.metrics().await.unwrap(),
        "nudge_cp_events_ingested_total",
        None,
    );
    assert_eq!(
        ingested,
        Some(10_000.0),
        "nudge_cp_events_ingested_total counts each new event once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_agent_under_load_loses_no_acknowledged_event() {
    let control_plane = ControlPlane::started(setup()).await.unwrap();
    let mut agent = Agent::started(setup(), &control_plane.grpc_url(), &[])
        .await
        .unwrap();
    let spec = LoadSpec {
        must_succeed: false,
        ..spec(&agent, "kill-agent")
    };
    let progress = Arc::new(Progress::default());
    let clients = spawn_clients(&spec, 20, &progress);

    for kill in 1..=3 {
        wait_for_acks(&progress, kill * 1_000).await;
        agent.process.kill();
        tokio::time::sleep(Duration::from_millis(200)).await;
        agent.start().await.unwrap();
    }
    wait_for_acks(&progress, 4_000).await;
    progress.stop.store(true, Ordering::Relaxed);
    let outcome = clients.await.unwrap();
    eprintln!(
        "acknowledged {}, sent {}, failed requests {} (e.g. {:?})",
        outcome.acked.len(),
        outcome.attempted.len(),
        outcome.failed_requests,
        outcome.failures
    );

    assert_delivered_exactly_once(
        &control_plane,
        &agent,
        &spec.user_names(),
        &outcome.acked,
        Some(&outcome.attempted),
    )
    .await;
    // Issue 14, item 6: pushes cut off by the SIGKILLs were stored all the
    // same, and must be counted all the same.
    let ingested = metric_value(
        &control_plane.metrics().await.unwrap(),
        "nudge_cp_events_ingested_total",
        None,
    );
    assert_eq!(
        ingested,
        Some(control_plane.stored_count().await.unwrap() as f64),
        "nudge_cp_events_ingested_total equals the events stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_control_plane_under_load_loses_no_acknowledged_event() {
    let control_plane = ControlPlane::new(setup()).unwrap();
    kill_the_control_plane_under_load(control_plane).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_control_plane_on_postgres_loses_no_acknowledged_event() {
    let url = nudge_e2e::postgres::fresh_database().await;
    let control_plane = ControlPlane::new(setup())
        .unwrap()
        .with_env([("NUDGE_CP_DATABASE_URL", url.as_str())]);
    kill_the_control_plane_under_load(control_plane).await;
}

/// Starts `control_plane` and an agent, SIGKILLs the control plane three
/// times under load, and checks every acknowledged event is stored once.
async fn kill_the_control_plane_under_load(mut control_plane: ControlPlane) {
    control_plane.start().await.unwrap();
    let agent = Agent::started(setup(), &control_plane.grpc_url(), &[])
        .await
        .unwrap();
    // The agent answers from its outbox: no request may fail while the
    // control plane is down.
    let spec = spec(&agent, "kill-cp");
    let progress = Arc::new(Progress::default());
    let clients = spawn_clients(&spec, 20, &progress);

    for kill in 1..=3 {
        wait_for_acks(&progress, kill * 1_000).await;
        control_plane.process.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        control_plane.start().await.unwrap();
    }
    wait_for_acks(&progress, 4_000).await;
    progress.stop.store(true, Ordering::Relaxed);
    let outcome = clients.await.unwrap();
    assert_eq!(outcome.failed_requests, 0);

    assert_delivered_exactly_once(
        &control_plane,
        &agent,
        &spec.user_names(),
        &outcome.acked,
        Some(&outcome.attempted),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_control_plane_down_the_agent_keeps_accepting_and_drains_when_it_returns() {
    let mut control_plane = ControlPlane::new(setup()).unwrap();
    let agent = Agent::started(setup(), &control_plane.grpc_url(), &[])
        .await
        .unwrap();
    let mut outcome = Outcome::default();
    let mut users = Vec::new();

    for (phase, run) in ["never-started", "stopped"].into_iter().enumerate() {
        let spec = LoadSpec {
            events_per_client: Some(60),
            ..spec(&agent, run)
        };
        users.extend(spec.user_names());
        let sent = run_clients(&spec, 5, Arc::default()).await;
        assert_eq!(sent.acked.len(), 300, "{run}: every call answered 2xx");
        let waiting = agent.metric("nudge_agent_outbox_events").await.unwrap();
        assert_eq!(
            waiting, 300.0,
            "{run}: the accepted events wait in the outbox"
        );
        outcome.merge(sent);

        control_plane.start().await.unwrap();
        assert_delivered_exactly_once(
            &control_plane,
            &agent,
            &users,
            &outcome.acked,
            Some(&outcome.attempted),
        )
        .await;
        if phase == 0 {
            let (status, _) = control_plane.process.terminate(DEADLINE).await.unwrap();
            assert!(
                status.success(),
                "the control plane exits 0 on SIGTERM: {status}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_quota_answers_503_with_retry_after_and_intake_resumes_after_the_drain() {
    let mut control_plane = ControlPlane::new(setup()).unwrap();
    let agent = Agent::started(
        setup(),
        &control_plane.grpc_url(),
        &[
            ("NUDGE_AGENT_MAX_OUTBOX_BYTES", "1MiB"),
            ("NUDGE_AGENT_SEGMENT_BYTES", "64KiB"),
        ],
    )
    .await
    .unwrap();
    let user = format!("quota-{}", std::process::id());
    let mut acked = HashSet::new();
    let mut attempted = HashSet::new();

    let mut refusal = None;
    for n in 0..1_000 {
        let ids: Vec<String> = (0..20).map(|i| format!("{user}-{n}-{i}")).collect();
        attempted.extend(ids.iter().cloned());
        let batch: Vec<Value> = ids
            .iter()
            .map(|id| {
                let mut call = event("track", &user, Some(id), 1_000);
                call["type"] = json!("track");
                call
            })
            .collect();
        let reply = agent
            .post("/v1/batch", &json!({ "batch": batch }))
            .await
            .unwrap();
        if reply.is_success() {
            acked.extend(ids);
            continue;
        }
        refusal = Some(reply);
        break;
    }
    let refusal =
        refusal.expect("the agent never refused although 20 MB were sent to a 1 MiB quota");
    assert_eq!(refusal.status, 503, "{refusal:?}");
    assert_eq!(refusal.code(), "outbox_full", "{refusal:?}");
    let retry_after = refusal
        .retry_after
        .as_deref()
        .expect("503 without Retry-After");
    let seconds: u64 = retry_after
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is not seconds: {retry_after}"));
    assert!(seconds >= 1, "Retry-After: {seconds}");
    assert!(
        !acked.is_empty(),
        "something was accepted before the quota filled"
    );

    // Single calls fill what room the refused batch left, then are refused
    // the same way.
    let mut single_refusal = None;
    for n in 0..1_000 {
        let id = format!("{user}-single-{n}");
        attempted.insert(id.clone());
        let reply = agent
            .post("/v1/track", &event("track", &user, Some(&id), 1_000))
            .await
            .unwrap();
        if reply.is_success() {
            acked.insert(id);
            continue;
        }
        single_refusal = Some(reply);
        break;
    }
    let single = single_refusal.expect("single calls were never refused by a full quota");
    assert_eq!(
        (single.status, single.code()),
        (503, "outbox_full"),
        "{single:?}"
    );
    assert!(
        single.retry_after.is_some(),
        "503 without Retry-After: {single:?}"
    );
    let health = http_client()
        .get(format!("http://{}/healthz", agent.admin))
        .send()
        .await
        .unwrap();
    assert!(
        health.status().is_success(),
        "/healthz while full: {}",
        health.status()
    );
    let rejected = metric_value(
        &agent.metrics().await.unwrap(),
        "nudge_agent_requests_rejected_total",
        Some("reason=\"outbox_full\""),
    );
    assert!(
        rejected.unwrap_or(0.0) >= 2.0,
        "rejections counted: {rejected:?}"
    );

    control_plane.start().await.unwrap();
    let users = vec![user.clone()];
    assert_delivered_exactly_once(&control_plane, &agent, &users, &acked, Some(&attempted)).await;

    let again_id = format!("{user}-after-drain");
    let again = agent
        .post("/v1/track", &event("track", &user, Some(&again_id), 10))
        .await
        .unwrap();
    assert!(
        again.is_success(),
        "intake accepts again after the drain: {again:?}"
    );
    acked.insert(again_id.clone());
    attempted.insert(again_id);
    assert_delivered_exactly_once(&control_plane, &agent, &users, &acked, Some(&attempted)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_its_own_4xx_and_leaves_accepted_events_untouched() {
    let control_plane = ControlPlane::started(setup()).await.unwrap();
    let agent = Agent::started(setup(), &control_plane.grpc_url(), &[])
        .await
        .unwrap();
    let user = format!("bad-input-{}", std::process::id());
    let mut acked = HashSet::new();
    let send_good = |round: &'static str| {
        let (agent, user) = (&agent, &user);
        async move {
            let mut ids = Vec::new();
            for i in 0..20 {
                let id = format!("{user}-good-{round}-{i}");
                let reply = agent
                    .post("/v1/track", &event("track", user, Some(&id), 32))
                    .await
                    .unwrap();
                assert!(reply.is_success(), "{reply:?}");
                ids.push(id);
            }
            ids
        }
    };
    acked.extend(send_good("before").await);

    let json_bytes = |value: Value| serde_json::to_vec(&value).unwrap();
    let bad_id = |case: &str| format!("{user}-bad-{case}");
    let oversized_batch: Vec<Value> = (0..30)
        .map(|i| {
            let mut call = event("track", &user, Some(&bad_id(&format!("batch-{i}"))), 20_000);
            call["type"] = json!("track");
            call
        })
        .collect();
    let mut invalid_utf8 = format!(
        r#"{{"userId":"{user}","event":"x","messageId":"{}","properties":{{"s":""#,
        bad_id("utf8")
    )
    .into_bytes();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    invalid_utf8.extend_from_slice(b"\"}}");
    // (case, path, content type, body, expected status, expected code)
    type BadCase<'a> = (&'a str, &'a str, &'a str, Vec<u8>, u16, &'a str);
    let cases: Vec<BadCase> = vec![
        (
            "malformed JSON",
            "/v1/track",
            "application/json",
            format!(
                r#"{{"userId": "{user}", "event": "x", "messageId": "{}", "#,
                bad_id("json")
            )
            .into_bytes(),
            400,
            "malformed_json",
        ),
        (
            "wrong content type",
            "/v1/track",
            "application/xml",
            json_bytes(event("track", &user, Some(&bad_id("xml")), 8)),
            415,
            "unsupported_media_type",
        ),
        (
            "no userId and no anonymousId",
            "/v1/track",
            "application/json",
            json_bytes(json!({ "event": "x", "messageId": bad_id("anonymous") })),
            400,
            "missing_identity",
        ),
        (
            "a call over 32 KB",
            "/v1/track",
            "application/json",
            json_bytes(event("track", &user, Some(&bad_id("big-call")), 40_000)),
            413,
            "payload_too_large",
        ),
        (
            "a batch over 500 KB",
            "/v1/batch",
            "application/json",
            json_bytes(json!({ "batch": oversized_batch })),
            413,
            "payload_too_large",
        ),
        (
            "invalid UTF-8",
            "/v1/track",
            "application/json",
            invalid_utf8,
            400,
            "invalid_utf8",
        ),
    ];
    let client = http_client();
    for (case, path, content_type, body, status, code) in cases {
        let reply = post_bytes(&client, &agent.url(path), content_type, body)
            .await
            .unwrap_or_else(|e| panic!("{case}: {e:?}"));
        assert_eq!(
            (reply.status, reply.code()),
            (status, code),
            "{case}: {:?}",
            reply.body
        );
        assert_eq!(
            reply.body["success"],
            json!(false),
            "{case}: {:?}",
            reply.body
        );
        assert!(
            reply.body["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{case}: the error says what is wrong: {:?}",
            reply.body
        );
    }

    let metrics = agent.metrics().await.unwrap();
    for (reason, count) in [
        ("malformed_json", 1.0),
        ("unsupported_media_type", 1.0),
        ("missing_identity", 1.0),
        ("payload_too_large", 2.0),
        ("invalid_utf8", 1.0),
    ] {
        let label = format!("reason=\"{reason}\"");
        let counted = metric_value(
            &metrics,
            "nudge_agent_requests_rejected_total",
            Some(&label),
        );
        assert_eq!(
            counted,
            Some(count),
            "nudge_agent_requests_rejected_total{{{label}}}"
        );
    }

    acked.extend(send_good("after").await);
    let attempted = acked.clone();
    assert_delivered_exactly_once(&control_plane, &agent, &[user], &acked, Some(&attempted)).await;
}

/// Issue 14, items 3 and 4, through the real agent binary: a 4 MiB quota
/// set alone starts (the segment size follows it), and ids the control
/// plane would refuse are answered 400 naming the field, with nothing of the
/// request stored, while good calls around them arrive exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_quota_alone_starts_and_ids_the_control_plane_refuses_get_400() {
    let control_plane = ControlPlane::started(setup()).await.unwrap();
    // The suite's defaults set NUDGE_AGENT_SEGMENT_BYTES; this agent must
    // run with the quota alone, as an operator would set it.
    let mut quota_only = setup().clone();
    quota_only
        .agent_defaults
        .retain(|(name, _)| name != "NUDGE_AGENT_SEGMENT_BYTES");
    let agent = Agent::started(
        &quota_only,
        &control_plane.grpc_url(),
        &[("NUDGE_AGENT_MAX_OUTBOX_BYTES", "4MiB")],
    )
    .await
    .unwrap();

    let user = format!("ids-{}", std::process::id());
    let mut acked = HashSet::new();
    acked.extend(track_ten(&agent, &user, "good").await);

    let over = "x".repeat(1025);
    let with = |field: &str, value: Value, case: &str| {
        let mut call = event("track", &user, Some(&format!("{user}-bad-{case}")), 8);
        call[field] = value;
        call
    };
    let single_cases = [
        (
            "userId",
            with("userId", json!("a\u{0}b"), "nul-user"),
            "NUL",
        ),
        (
            "userId",
            with("userId", json!(over), "long-user"),
            "1025 bytes",
        ),
        (
            "anonymousId",
            with("anonymousId", json!("a\u{0}b"), "nul-anonymous"),
            "NUL",
        ),
        (
            "anonymousId",
            with("anonymousId", json!(over), "long-anonymous"),
            "1025 bytes",
        ),
        ("messageId", with("messageId", json!("m\u{0}"), "x"), "NUL"),
    ];
    // The same in a batch whose other item is good: all or nothing.
    let mut bad_item = with("userId", json!("a\u{0}b"), "batch-bad");
    bad_item["type"] = json!("track");
    let mut good_item = event("track", &user, Some(&format!("{user}-batch-good")), 8);
    good_item["type"] = json!("track");
    let batch = json!({ "batch": [good_item, bad_item] });
    let mut cases: Vec<(&str, &str, Value, &str)> = single_cases
        .into_iter()
        .map(|(field, call, problem)| ("/v1/track", field, call, problem))
        .collect();
    cases.push(("/v1/batch", "userId", batch, "NUL"));
    let refused = cases.len();
    for (path, field, body, problem) in cases {
        let reply = agent.post(path, &body).await.unwrap();
        assert_eq!(
            (reply.status, reply.code()),
            (400, "invalid_field"),
            "{path} {field}: {:?}",
            reply.body
        );
        let message = reply.body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("`{field}`")) && message.contains(problem),
            "{path}: the answer names `{field}` and says {problem}: {message}"
        );
    }
    let rejected = metric_value(
        &agent.metrics().await.unwrap(),
        "nudge_agent_requests_rejected_total",
        Some("reason=\"invalid_field\""),
    );
    assert_eq!(rejected, Some(refused as f64));

    acked.extend(track_ten(&agent, &user, "after").await);
    // Only the good single calls were sent for storing: the batch's good
    // item must not be stored either.
    let attempted = acked.clone();
    assert_delivered_exactly_once(&control_plane, &agent, &[user], &acked, Some(&attempted)).await;
    let cp_rejected = metric_value(
        &control_plane.metrics().await.unwrap(),
        "nudge_cp_events_rejected_total",
        None,
    );
    assert_eq!(
        cp_rejected,
        Some(0.0),
        "the control plane refused nothing the agent acknowledged"
    );
}

/// Issue 14, item 5, through the real agent binary: with its data dir on a
/// tmpfs filled to the brim, intake answers 500 `storage_error` (never a
/// success it cannot keep), resumes once space is freed, and every
/// acknowledged event arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_answers_500_without_acking_and_intake_resumes_when_space_returns() {
    let Some(disk) = support::Tmpfs::mount("8m") else {
        return;
    };
    let data = disk.path.join("agent");
    let data = data.to_str().unwrap();
    let mut control_plane = ControlPlane::new(setup()).unwrap();
    let mut agent = Agent::new(
        setup(),
        &control_plane.grpc_url(),
        &[("NUDGE_AGENT_DATA_DIR", data)],
    )
    .unwrap();
    agent.start().await.unwrap();
    let user = format!("disk-full-{}", std::process::id());
    let (mut acked, mut attempted) = (HashSet::new(), HashSet::new());
    let mut send = |n: usize| {
        let id = format!("{user}-{n}");
        attempted.insert(id.clone());
        let call = event("track", &user, Some(&id), 512);
        let agent = &agent;
        async move { (id, agent.post("/v1/track", &call).await.unwrap()) }
    };
    for n in 0..50 {
        let (id, reply) = send(n).await;
        assert!(reply.is_success(), "{reply:?}");
        acked.insert(id);
    }

    let filler = disk.fill();
    let mut refused = 0;
    for n in 50..250 {
        let (id, reply) = send(n).await;
        match reply.status {
            200 => {
                acked.insert(id);
            }
            500 => {
                assert_eq!(reply.code(), "storage_error", "{:?}", reply.body);
                refused += 1;
            }
            other => panic!("a full disk answered {other}: {:?}", reply.body),
        }
    }
    assert!(refused > 0, "a full disk must refuse calls");

    std::fs::remove_file(&filler).unwrap();
    for n in 1000..1050 {
        let (id, reply) = send(n).await;
        assert!(
            reply.is_success(),
            "intake resumes once space returns: {reply:?}"
        );
        acked.insert(id);
    }
    control_plane.start().await.unwrap();
    // Refused calls may still arrive (a 500's outcome is unknown, as with
    // any 5xx), but nothing acknowledged may be missing or doubled.
    assert_delivered_exactly_once(&control_plane, &agent, &[user], &acked, Some(&attempted)).await;
    agent.process.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_segment_client_sends_track_identify_and_page() {
    let python = installed_tool(
        "NUDGE_TEST_PYTHON",
        ".venv/bin/python",
        "a venv with segment-analytics-python",
    );
    let control_plane = ControlPlane::started(setup()).await.unwrap();
    let agent = Agent::started(setup(), &control_plane.grpc_url(), &[])
        .await
        .unwrap();
    let user = format!("segment-python-{}", std::process::id());

    let output = tokio::process::Command::new(&python)
        .arg(workspace_dir().join("tests/python/segment_client.py"))
        .args([&agent.url(""), "e2e-write-key", &user])
        .output()
        .await
        .expect("run the Segment client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "segment_client.py failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let ids: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));

    wait_until("the three calls are stored", || async {
        control_plane.events_for_user(&user).await.unwrap().len() >= 3
    })
    .await;
    let events = control_plane.events_for_user(&user).await.unwrap();
    assert_eq!(events.len(), 3, "{events:#?}");
    let of_type = |kind: &str| {
        events
            .iter()
            .find(|e| e["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} stored: {events:#?}"))
    };
    let track = of_type("track");
    assert_eq!(track["id"], ids["track"]);
    assert_eq!(track["event"], "Order Completed");
    assert_eq!(track["properties"]["revenue"], 42.5);
    assert_eq!(track["properties"]["currency"], "EUR");
    let identify = of_type("identify");
    assert_eq!(identify["id"], ids["identify"]);
    assert_eq!(identify["traits"]["email"], "ada@example.com");
    assert_eq!(identify["traits"]["plan"], "pro");
    let page = of_type("page");
    assert_eq!(page["id"], ids["page"]);
    assert_eq!(page["name"], "Getting Started");
    assert_eq!(page["category"], "Docs");
    assert_eq!(page["properties"]["path"], "/docs/start");
    for event in &events {
        assert_eq!(event["user_id"], json!(user));
        assert_eq!(
            event["write_key"], "e2e-write-key",
            "the Basic-auth write key travels with the event"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_disk_use_returns_near_its_floor_after_a_backlog_drains() {
    let mut control_plane = ControlPlane::new(setup()).unwrap();
    let agent = Agent::started(
        setup(),
        &control_plane.grpc_url(),
        &[("NUDGE_AGENT_SEGMENT_BYTES", "1MiB")],
    )
    .await
    .unwrap();
    let spec = LoadSpec {
        events_per_client: Some(2_500),
        pad: 1_000,
        ..spec(&agent, "disk")
    };

    let outcome = run_clients(&spec, 8, Arc::default()).await;
    assert_eq!(outcome.acked.len(), 20_000);
    let peak = agent.metric("nudge_agent_outbox_disk_bytes").await.unwrap();
    assert!(
        peak > 10e6,
        "20,000 events of ~1 KB take at least 10 MB on disk, the metric says {peak}"
    );

    control_plane.start().await.unwrap();
    wait_until_within("the backlog drains", 3 * DEADLINE, || async {
        agent.metric("nudge_agent_outbox_events").await.unwrap() == 0.0
    })
    .await;
    wait_until(
        "the outbox's disk use falls below 20% of its peak",
        || async { agent.metric("nudge_agent_outbox_disk_bytes").await.unwrap() < 0.2 * peak },
    )
    .await;
    let floor = agent.metric("nudge_agent_outbox_disk_bytes").await.unwrap();
    eprintln!("outbox disk bytes: peak {peak}, after the drain {floor}");
    assert_delivered_exactly_once(
        &control_plane,
        &agent,
        &spec.user_names(),
        &outcome.acked,
        Some(&outcome.attempted),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_of_both_programs_pass_promtool_check() {
    let promtool = std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("promtool"))
                .find(|p| p.is_file())
        })
        .expect(
            "promtool not found: install the Debian package `prometheus` (`scripts/test` does)",
        );
    let control_plane = ControlPlane::started(setup()).await.unwrap();
    let agent = Agent::started(setup(), &control_plane.grpc_url(), &[])
        .await
        .unwrap();
    // Some traffic, so counters, labelled series and histograms have samples.
    let spec = LoadSpec {
        events_per_client: Some(20),
        ..spec(&agent, "metrics")
    };
    let outcome = run_clients(&spec, 2, Arc::default()).await;
    let bad = post_bytes(
        &http_client(),
        &agent.url("/v1/track"),
        "application/json",
        b"{".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(bad.status, 400);
    assert_delivered_exactly_once(
        &control_plane,
        &agent,
        &spec.user_names(),
        &outcome.acked,
        None,
    )
    .await;

    let agent_metrics = agent.metrics().await.unwrap();
    let control_plane_metrics = control_plane.metrics().await.unwrap();
    for name in [
        "nudge_agent_events_received_total",
        "nudge_agent_events_shipped_total",
        "nudge_agent_outbox_events",
        "nudge_agent_outbox_bytes",
        "nudge_agent_outbox_disk_bytes",
        "nudge_agent_requests_rejected_total",
        "nudge_agent_ship_duration_seconds_bucket",
    ] {
        assert!(
            metric_value(&agent_metrics, name, None).is_some(),
            "agent /metrics lacks {name}"
        );
    }
    for name in [
        "nudge_cp_events_ingested_total",
        "nudge_cp_events_duplicate_total",
    ] {
        assert!(
            metric_value(&control_plane_metrics, name, None).is_some(),
            "control plane /metrics lacks {name}"
        );
    }
    for (program, text) in [
        ("nudge-agent", agent_metrics),
        ("nudge-control-plane", control_plane_metrics),
    ] {
        let mut check = tokio::process::Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = check.stdin.take().unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stdin, text.as_bytes())
            .await
            .unwrap();
        drop(stdin);
        let output = check.wait_with_output().await.unwrap();
        assert!(
            output.status.success(),
            "promtool check metrics on {program}'s /metrics:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_setting_exits_64_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let agent_ok = [
        ("NUDGE_AGENT_LISTEN", "127.0.0.1:0"),
        ("NUDGE_AGENT_ADMIN_LISTEN", "127.0.0.1:0"),
        ("NUDGE_AGENT_DATA_DIR", data.as_str()),
        ("NUDGE_AGENT_CONTROL_PLANE", "http://127.0.0.1:1"),
    ];
    let control_plane_ok = [
        ("NUDGE_CP_GRPC_LISTEN", "127.0.0.1:0"),
        ("NUDGE_CP_HTTP_LISTEN", "127.0.0.1:0"),
        ("NUDGE_CP_ADMIN_LISTEN", "127.0.0.1:0"),
        ("NUDGE_CP_DATA_DIR", data.as_str()),
        ("NUDGE_CP_ADMIN_TOKEN", "token"),
    ];
    type Settings<'a> = &'a [(&'a str, &'a str)];
    let cases: [(&str, Settings, (&str, &str)); 7] = [
        ("nudge-agent", &agent_ok, ("NUDGE_AGENT_LISTEN", "nowhere")),
        (
            "nudge-agent",
            &agent_ok,
            ("NUDGE_AGENT_CONTROL_PLANE", "not a url"),
        ),
        (
            "nudge-agent",
            &agent_ok,
            ("NUDGE_AGENT_MAX_OUTBOX_BYTES", "10KiB"),
        ),
        // Issue 15: a guessable server key, an origin browsers never send.
        (
            "nudge-agent",
            &agent_ok,
            ("NUDGE_AGENT_SERVER_KEYS", "secret"),
        ),
        (
            "nudge-agent",
            &agent_ok,
            ("NUDGE_AGENT_CORS_ORIGINS", "https://shop.example/"),
        ),
        (
            "nudge-control-plane",
            &control_plane_ok,
            ("NUDGE_CP_GRPC_LISTEN", "nowhere"),
        ),
        (
            "nudge-control-plane",
            &control_plane_ok,
            ("NUDGE_CP_ADMIN_LISTEN", "127.0.0.1:http"),
        ),
    ];
    for (program, valid, (variable, value)) in cases {
        let mut env: Vec<(&str, &str)> = valid
            .iter()
            .copied()
            .filter(|(k, _)| *k != variable)
            .collect();
        env.push((variable, value));
        let (status, output) = run_to_exit(&binary(program), &env).await;
        assert_eq!(
            status.code(),
            Some(64),
            "{program} with {variable}={value}: {status}\n{output}"
        );
        assert!(
            output.contains(variable),
            "{program}: the message names {variable}:\n{output}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_under_the_control_plane_costs_readiness_not_events() {
    // A server of this test's own: it is stopped and started again.
    let cluster = nudge_e2e::postgres::Cluster::start(&[]).unwrap();
    let url = cluster.create_database("nudge").await.unwrap();
    let mut control_plane = ControlPlane::new(setup())
        .unwrap()
        .with_env([("NUDGE_CP_DATABASE_URL", url.as_str())]);
    control_plane.start().await.unwrap();
    let agent = Agent::started(setup(), &control_plane.grpc_url(), &[])
        .await
        .unwrap();
    let readyz = format!("http://{}/readyz", control_plane.admin);
    let client = http_client();
    let ready = || async {
        client
            .get(&readyz)
            .send()
            .await
            .is_ok_and(|response| response.status().is_success())
    };
    let mut outcome = Outcome::default();
    let mut users = Vec::new();
    for run in ["pg-up", "pg-down"] {
        let spec = LoadSpec {
            events_per_client: Some(50),
            ..spec(&agent, run)
        };
        users.extend(spec.user_names());
        if run == "pg-down" {
            cluster.stop_immediately().unwrap();
            wait_until("the control plane reports not ready", || async {
                !ready().await
            })
            .await;
        }
        // The agent keeps accepting either way: its outbox holds the events.
        let sent = run_clients(&spec, 4, Arc::default()).await;
        assert_eq!(sent.acked.len(), 200, "{run}: every call answered 2xx");
        outcome.merge(sent);
    }
    cluster.restart().unwrap();
    wait_until("the control plane is ready again", ready).await;
    assert_delivered_exactly_once(
        &control_plane,
        &agent,
        &users,
        &outcome.acked,
        Some(&outcome.attempted),
    )
    .await;
}

/// Ten single `/v1/track` calls with ids `{user}-{label}-{i}`, each
/// answered 2xx; their ids.
async fn track_ten(agent: &Agent, user: &str, label: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..10 {
        let id = format!("{user}-{label}-{i}");
        let reply = agent
            .post("/v1/track", &event("track", user, Some(&id), 32))
            .await
            .unwrap();
        assert!(reply.is_success(), "{reply:?}");
        ids.push(id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_cannot_be_used_exits_64_naming_the_url_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let unreachable = format!(
        "postgres://nudge:hunter2@{}/nudge",
        nudge_e2e::ports::free_loopback()
    );
    for url in [unreachable.as_str(), "mysql://root:hunter2@db/nudge"] {
        let env = [
            ("NUDGE_CP_GRPC_LISTEN", "127.0.0.1:0"),
            ("NUDGE_CP_HTTP_LISTEN", "127.0.0.1:0"),
            ("NUDGE_CP_ADMIN_LISTEN", "127.0.0.1:0"),
            ("NUDGE_CP_DATA_DIR", data.as_str()),
            ("NUDGE_CP_DATABASE_URL", url),
            ("NUDGE_CP_DATABASE_CONNECT_TIMEOUT", "2s"),
        ];
        let started = std::time::Instant::now();
        let (status, output) = run_to_exit(&binary("nudge-control-plane"), &env).await;
        assert_eq!(status.code(), Some(64), "{url}: {status}\n{output}");
        assert!(
            output.contains("NUDGE_CP_DATABASE_URL"),
            "{url}: the message names the setting:\n{output}"
        );
        assert!(
            !output.contains("hunter2"),
            "{url}: the password is redacted:\n{output}"
        );
        assert!(
            output.contains("***"),
            "{url}: the redacted URL is shown:\n{output}"
        );
        // A bounded wait, not a hang (generous: the machine is shared).
        assert!(started.elapsed() < Duration::from_secs(60), "{url}: exits");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_exits_0_within_the_grace_and_the_rest_ships_after_the_next_start() {
    const GRACE: Duration = Duration::from_secs(2);
    // What "within the grace" tolerates: process exit and a loaded machine.
    const SLACK: Duration = Duration::from_secs(20);
    let mut control_plane = ControlPlane::new(setup()).unwrap();
    // One event per shipment, so that draining the backlog takes longer than
    // the grace period and the SIGTERM lands in the middle of it.
    let mut agent = Agent::started(
        setup(),
        &control_plane.grpc_url(),
        &[
            ("NUDGE_AGENT_SHUTDOWN_GRACE", "2s"),
            ("NUDGE_AGENT_BATCH_MAX_EVENTS", "1"),
        ],
    )
    .await
    .unwrap();
    let spec = LoadSpec {
        events_per_client: Some(500),
        ..spec(&agent, "sigterm")
    };
    let outcome = run_clients(&spec, 10, Arc::default()).await;
    assert_eq!(outcome.acked.len(), 5_000);

    // Control plane down: nothing can ship, the agent still leaves in time.
    let (status, took) = agent.process.terminate(GRACE + SLACK).await.unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
    eprintln!("SIGTERM with the control plane down: exited after {took:?}");
    agent.start().await.unwrap();
    let waiting = agent.metric("nudge_agent_outbox_events").await.unwrap();
    assert_eq!(
        waiting, 5_000.0,
        "the backlog is still on disk after a SIGTERM"
    );

    // Control plane up, backlog being shipped: SIGTERM in the middle.
    control_plane.start().await.unwrap();
    let (status, took) = agent.process.terminate(GRACE + SLACK).await.unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
    let shipped = control_plane.stored_count().await.unwrap();
    eprintln!(
        "SIGTERM while shipping: exited after {took:?}, {shipped} of 5000 stored before the exit"
    );

    agent.start().await.unwrap();
    assert_delivered_exactly_once(
        &control_plane,
        &agent,
        &spec.user_names(),
        &outcome.acked,
        Some(&outcome.attempted),
    )
    .await;
}

/// `buf curl` (a third-party gRPC client, from npm) discovers the control
/// plane's services through reflection, sees `nudge.v1.Ingest` and
/// `nudge.v1.Management` as SERVING on the standard health service (both
/// open without a token), pushes a batch twice with the agent token
/// (stored once), and calls the management API with the admin token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_grpc_client_uses_reflection_health_and_ingest() {
    let buf = installed_tool(
        "NUDGE_TEST_BUF",
        ".tools/node_modules/.bin/buf",
        "@bufbuild/buf with npm",
    );
    let control_plane = ControlPlane::started(setup()).await.unwrap();
    let url = control_plane.grpc_url();
    let buf_curl = |args: &[&str]| {
        let mut command = std::process::Command::new(&buf);
        command.args(["curl", "--protocol", "grpc", "--http2-prior-knowledge"]);
        command.args(args);
        let output = command.output().expect("run buf curl");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "buf curl {args:?} failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };

    let services = buf_curl(&["--list-services", &url]);
    for service in [
        "nudge.v1.Ingest",
        "nudge.v1.Management",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            services.lines().any(|line| line.trim() == service),
            "{service} missing from {services}"
        );
    }

    let health = buf_curl(&[
        "-d",
        r#"{"service":"nudge.v1.Ingest"}"#,
        &format!("{url}/grpc.health.v1.Health/Check"),
    ]);
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "SERVING");
    let health = buf_curl(&[
        "-d",
        r#"{"service":"nudge.v1.Management"}"#,
        &format!("{url}/grpc.health.v1.Health/Check"),
    ]);
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "SERVING");

    let user = format!("buf-{}", std::process::id());
    let batch = json!({
        "agentId": "buf-curl",
        "batchId": "b-1",
        "envelopes": [{
            "id": format!("{user}-e1"),
            "userId": user,
            "track": {"event": "Signed Up", "propertiesJson": "{\"plan\":\"pro\"}"}
        }]
    })
    .to_string();
    let push = format!("{url}/nudge.v1.Ingest/Push");
    // As an agent does: with the agent token, as the README shows it.
    let agent_auth = format!("Authorization: Bearer {}", control_plane.agent_token());
    let first: Value =
        serde_json::from_str(&buf_curl(&["-H", &agent_auth, "-d", &batch, &push])).unwrap();
    assert_eq!(first["stored"], 1, "{first}");
    let again: Value =
        serde_json::from_str(&buf_curl(&["-H", &agent_auth, "-d", &batch, &push])).unwrap();
    assert_eq!(
        again["duplicates"], 1,
        "a resent batch is a duplicate: {again}"
    );

    let events = control_plane.events_for_user(&user).await.unwrap();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["event"], "Signed Up");
    assert_eq!(events[0]["properties"]["plan"], "pro");

    // The management API, as the README shows it.
    let put_type = format!("{url}/nudge.v1.Management/PutType");
    let auth = format!("Authorization: Bearer {}", setup().admin_token);
    let welcome = r#"{"type":{"name":"welcome","channels":["in_app"],"templates":{"fallback":{"title":"Welcome {{ data.plan }}"}}}}"#;
    let put: Value =
        serde_json::from_str(&buf_curl(&["-H", &auth, "-d", welcome, &put_type])).unwrap();
    assert_eq!(put["created"], true, "{put}");
    assert_eq!(put["type"]["source"], "SOURCE_API", "{put}");
    let list_types = format!("{url}/nudge.v1.Management/ListTypes");
    let types: Value =
        serde_json::from_str(&buf_curl(&["-H", &auth, "-d", "{}", &list_types])).unwrap();
    assert_eq!(types["types"][0]["type"]["name"], "welcome", "{types}");
    // Without the token: refused (buf curl exits non-zero).
    let refused = std::process::Command::new(&buf)
        .args(["curl", "--protocol", "grpc", "--http2-prior-knowledge"])
        .args(["-d", "{}", &list_types])
        .output()
        .expect("run buf curl");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("unauthenticated"), "{stderr}");
}
