//! End-to-end tests of authenticated ingest (issue 15, item 2): real
//! `nudge-control-plane` and `nudge-agent` processes, and tonic's generated
//! Ingest client pushing as a third party would.
//!
//! What is checked: with agent tokens configured, a Push without a token or
//! with a wrong one is UNAUTHENTICATED and stores nothing, and every
//! configured token is accepted (rotation); an agent holding a wrong token
//! keeps its events in its outbox (across a restart too), says so in its
//! log and metrics, and ships them exactly once when its token file is
//! fixed; a control plane reachable from other hosts without any
//! authentication refuses to start (exit 64, naming the settings) unless
//! the loud opt-out is set, which it then reports. Every other end-to-end
//! test runs with the harness's agent token, so the authenticated path is
//! the one they all exercise.
//!
//! Run `cargo build --bins` first; `scripts/test` does everything.

// `support` is shared with `e2e.rs`; this binary uses only part of it.
#[allow(dead_code)]
mod support;

use std::collections::HashSet;

use serde_json::json;

use nudge_e2e::metrics::metric_value;
use nudge_e2e::{Agent, ControlPlane};
use nudge_proto::v1::envelope::Body;
use nudge_proto::v1::ingest_client::IngestClient;
use nudge_proto::v1::{Envelope, PushRequest, PushResponse, Track};
use support::{AGENT_TOKEN, assert_delivered_exactly_once, binary, run_to_exit, setup, wait_until};

const OLD_TOKEN: &str = "old-agent-token-0123456789";
const NEW_TOKEN: &str = "new-agent-token-0123456789";
const WRONG_TOKEN: &str = "wrong-agent-token-0123456789";

/// A one-event batch of `user` with envelope id `id`.
fn batch(user: &str, id: &str) -> PushRequest {
    PushRequest {
        agent_id: "grpc-auth-test".into(),
        batch_id: format!("batch-{id}"),
        envelopes: vec![Envelope {
            id: id.into(),
            user_id: user.into(),
            body: Some(Body::Track(Track {
                event: "Signed Up".into(),
                properties_json: "{}".into(),
            })),
            ..Envelope::default()
        }],
        ..PushRequest::default()
    }
}

/// Pushes `request` to `control_plane`, with `authorization: Bearer
/// <token>` when a token is given.
async fn push(
    control_plane: &ControlPlane,
    token: Option<&str>,
    request: PushRequest,
) -> Result<PushResponse, tonic::Status> {
    let mut client = IngestClient::connect(control_plane.grpc_url())
        .await
        .unwrap();
    let mut request = tonic::Request::new(request);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    client.push(request).await.map(tonic::Response::into_inner)
}

async fn cp_metric(control_plane: &ControlPlane, name: &str, label: Option<&str>) -> f64 {
    metric_value(&control_plane.metrics().await.unwrap(), name, label).unwrap_or(0.0)
}

async fn agent_metric(agent: &Agent, name: &str, label: Option<&str>) -> f64 {
    metric_value(&agent.metrics().await.unwrap(), name, label).unwrap_or(0.0)
}

/// Whether `agent` was refused (UNAUTHENTICATED) at least three times since
/// it started, and says so in its gauge.
async fn refused_several_times(agent: &Agent) -> bool {
    let text = agent.metrics().await.unwrap();
    metric_value(
        &text,
        "nudge_agent_ship_failures_total",
        Some(r#"kind="unauthenticated""#),
    )
    .unwrap_or(0.0)
        >= 3.0
        && metric_value(&text, "nudge_agent_control_plane_unauthenticated", None) == Some(1.0)
}

fn assert_unauthenticated(outcome: Result<PushResponse, tonic::Status>, says: &str) {
    let status = outcome.expect_err("the push must be refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains(says), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_needs_one_of_the_agent_tokens_and_a_refused_push_stores_nothing() {
    let user = format!("token-user-{}", std::process::id());
    let mut control_plane = ControlPlane::new(setup()).unwrap();
    // Rotation under way: both tokens are accepted.
    control_plane
        .process
        .set_env("NUDGE_CP_AGENT_TOKENS", &format!("{OLD_TOKEN},{NEW_TOKEN}"));
    control_plane.start().await.unwrap();

    assert_unauthenticated(
        push(&control_plane, None, batch(&user, "no-token")).await,
        "authorization: Bearer",
    );
    assert_unauthenticated(
        push(&control_plane, Some(WRONG_TOKEN), batch(&user, "wrong")).await,
        "not one of NUDGE_CP_AGENT_TOKENS",
    );
    assert_unauthenticated(
        push(
            &control_plane,
            Some(&OLD_TOKEN[1..]),
            batch(&user, "prefix"),
        )
        .await,
        "not one of NUDGE_CP_AGENT_TOKENS",
    );
    assert_eq!(control_plane.stored_count().await.unwrap(), 0);
    assert!(
        cp_metric(
            &control_plane,
            "nudge_cp_grpc_request_duration_seconds_count",
            Some(r#"code="UNAUTHENTICATED""#),
        )
        .await
            >= 3.0,
        "refusals show in the request metrics"
    );
    assert_eq!(
        cp_metric(&control_plane, "nudge_cp_grpc_unauthenticated_ingest", None).await,
        0.0
    );

    for (token, id) in [(OLD_TOKEN, "with-old"), (NEW_TOKEN, "with-new")] {
        let answer = push(&control_plane, Some(token), batch(&user, id))
            .await
            .unwrap();
        assert_eq!(answer.stored, 1, "{id}: {answer:?}");
    }
    let stored: HashSet<String> = control_plane
        .events_for_user(&user)
        .await
        .unwrap()
        .iter()
        .map(|event| event["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        stored,
        HashSet::from(["with-old".to_owned(), "with-new".to_owned()])
    );

    // Rotation done: the old token is removed and refused from then on.
    control_plane.process.kill();
    control_plane
        .process
        .set_env("NUDGE_CP_AGENT_TOKENS", NEW_TOKEN);
    control_plane.start().await.unwrap();
    assert_unauthenticated(
        push(&control_plane, Some(OLD_TOKEN), batch(&user, "old-again")).await,
        "not one of NUDGE_CP_AGENT_TOKENS",
    );
    let answer = push(&control_plane, Some(NEW_TOKEN), batch(&user, "new-again"))
        .await
        .unwrap();
    assert_eq!(answer.stored, 1);
    assert_eq!(control_plane.stored_count().await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_a_wrong_token_keeps_its_events_until_the_token_is_fixed() {
    let user = format!("refused-agent-{}", std::process::id());
    let control_plane = ControlPlane::started(setup()).await.unwrap();
    let mut agent = Agent::started(
        setup(),
        &control_plane.grpc_url(),
        &[("NUDGE_AGENT_CONTROL_PLANE_TOKEN", WRONG_TOKEN)],
    )
    .await
    .unwrap();
    let ids: HashSet<String> = (0..10).map(|i| format!("{user}-{i}")).collect();
    for id in &ids {
        let reply = agent
            .post(
                "/v1/track",
                &json!({"userId": user, "event": "Signed Up", "messageId": id}),
            )
            .await
            .unwrap();
        assert!(reply.is_success(), "{reply:?}");
    }

    wait_until("the agent is refused several times", || {
        refused_several_times(&agent)
    })
    .await;
    assert_eq!(
        agent_metric(&agent, "nudge_agent_outbox_events", None).await,
        10.0,
        "a refused agent keeps every event"
    );
    assert_eq!(control_plane.stored_count().await.unwrap(), 0);
    assert!(
        agent
            .process
            .log_text()
            .contains("the control plane refused this agent's credentials"),
        "the agent says why it cannot ship:\n{}",
        agent.process.log_tail(20)
    );

    // Restarted with the token in a file (a mounted Secret), still the
    // wrong one: the events survived the restart and are still refused.
    let secret = tempfile::tempdir().unwrap();
    let token_file = secret.path().join("agent-token");
    std::fs::write(&token_file, format!("{WRONG_TOKEN}\n")).unwrap();
    agent.process.kill();
    agent.process.remove_env("NUDGE_AGENT_CONTROL_PLANE_TOKEN");
    agent.process.set_env(
        "NUDGE_AGENT_CONTROL_PLANE_TOKEN_FILE",
        token_file.to_str().unwrap(),
    );
    agent.start().await.unwrap();
    wait_until("the restarted agent is refused several times", || {
        refused_several_times(&agent)
    })
    .await;
    assert_eq!(
        agent_metric(&agent, "nudge_agent_outbox_events", None).await,
        10.0
    );
    assert_eq!(control_plane.stored_count().await.unwrap(), 0);

    // The Secret is fixed: the agent reads the file again after its next
    // refusal and ships everything, once, without a restart.
    std::fs::write(&token_file, format!("{AGENT_TOKEN}\n")).unwrap();
    assert_delivered_exactly_once(&control_plane, &agent, &[user], &ids, Some(&ids)).await;
    assert_eq!(
        agent_metric(&agent, "nudge_agent_control_plane_unauthenticated", None).await,
        0.0,
        "an accepted push clears the gauge"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reachable_listener_without_agent_auth_needs_the_loud_opt_out() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let base = [
        ("NUDGE_CP_HTTP_LISTEN", "127.0.0.1:0"),
        ("NUDGE_CP_ADMIN_LISTEN", "127.0.0.1:0"),
        ("NUDGE_CP_DATA_DIR", data.as_str()),
    ];
    let reachable = ("NUDGE_CP_GRPC_LISTEN", "0.0.0.0:0");
    let (status, output) = run_to_exit(
        &binary("nudge-control-plane"),
        &[&base[..], &[reachable]].concat(),
    )
    .await;
    assert_eq!(status.code(), Some(64), "{status}\n{output}");
    for setting in [
        "NUDGE_CP_GRPC_LISTEN",
        "NUDGE_CP_AGENT_TOKENS",
        "NUDGE_CP_TLS_CLIENT_CA",
        "NUDGE_CP_GRPC_INSECURE_ALLOW_UNAUTHENTICATED",
    ] {
        assert!(output.contains(setting), "names {setting}:\n{output}");
    }

    // With the opt-out it starts, says so loudly and exports it, and takes
    // pushes without a token.
    let user = format!("opted-out-{}", std::process::id());
    let mut control_plane = ControlPlane::new(setup()).unwrap();
    let listen = format!("0.0.0.0:{}", control_plane.grpc.port());
    control_plane.process.remove_env("NUDGE_CP_AGENT_TOKENS");
    control_plane
        .process
        .set_env("NUDGE_CP_GRPC_LISTEN", &listen);
    control_plane
        .process
        .set_env("NUDGE_CP_GRPC_INSECURE_ALLOW_UNAUTHENTICATED", "true");
    control_plane.start().await.unwrap();
    assert_eq!(
        cp_metric(&control_plane, "nudge_cp_grpc_unauthenticated_ingest", None).await,
        1.0
    );
    let log = control_plane.process.log_text();
    assert!(
        log.lines()
            .any(|line| line.contains("WARN") && line.contains("INSECURE")),
        "a WARN at start:\n{log}"
    );
    let answer = push(&control_plane, None, batch(&user, "open"))
        .await
        .unwrap();
    assert_eq!(answer.stored, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_token_settings_exit_64_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let missing = dir.path().join("missing-token").display().to_string();
    let control_plane = [
        ("NUDGE_CP_GRPC_LISTEN", "127.0.0.1:0"),
        ("NUDGE_CP_HTTP_LISTEN", "127.0.0.1:0"),
        ("NUDGE_CP_ADMIN_LISTEN", "127.0.0.1:0"),
        ("NUDGE_CP_DATA_DIR", data.as_str()),
    ];
    let agent = [
        ("NUDGE_AGENT_LISTEN", "127.0.0.1:0"),
        ("NUDGE_AGENT_ADMIN_LISTEN", "127.0.0.1:0"),
        ("NUDGE_AGENT_DATA_DIR", data.as_str()),
        ("NUDGE_AGENT_CONTROL_PLANE", "http://127.0.0.1:1"),
    ];
    type Settings<'a> = &'a [(&'a str, &'a str)];
    let cases: [(&str, Settings, Settings, &str); 5] = [
        (
            "nudge-control-plane",
            &control_plane,
            &[("NUDGE_CP_AGENT_TOKENS", "short")],
            "NUDGE_CP_AGENT_TOKENS",
        ),
        (
            "nudge-control-plane",
            &control_plane,
            &[
                ("NUDGE_CP_AGENT_TOKENS", NEW_TOKEN),
                ("NUDGE_CP_GRPC_INSECURE_ALLOW_UNAUTHENTICATED", "true"),
            ],
            "NUDGE_CP_GRPC_INSECURE_ALLOW_UNAUTHENTICATED",
        ),
        (
            "nudge-agent",
            &agent,
            &[("NUDGE_AGENT_CONTROL_PLANE_TOKEN", "has a space")],
            "NUDGE_AGENT_CONTROL_PLANE_TOKEN",
        ),
        (
            "nudge-agent",
            &agent,
            &[("NUDGE_AGENT_CONTROL_PLANE_TOKEN_FILE", missing.as_str())],
            "NUDGE_AGENT_CONTROL_PLANE_TOKEN_FILE",
        ),
        (
            "nudge-agent",
            &agent,
            &[
                ("NUDGE_AGENT_CONTROL_PLANE_TOKEN", NEW_TOKEN),
                ("NUDGE_AGENT_CONTROL_PLANE_TOKEN_FILE", missing.as_str()),
            ],
            "NUDGE_AGENT_CONTROL_PLANE_TOKEN_FILE",
        ),
    ];
    for (program, valid, bad, named) in cases {
        let env = [valid, bad].concat();
        let (status, output) = run_to_exit(&binary(program), &env).await;
        assert_eq!(
            status.code(),
            Some(64),
            "{program} {bad:?}: {status}\n{output}"
        );
        assert!(
            output.contains(named),
            "{program} {bad:?} names {named}:\n{output}"
        );
        assert!(
            !output.contains(NEW_TOKEN),
            "{program}: a token is never echoed:\n{output}"
        );
    }
}
