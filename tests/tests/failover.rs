//! Issue 13 item 4 against the real binaries: one agent configured with two
//! control-plane replicas that share one PostgreSQL database. The agent
//! spreads its batches over both, carries on through the survivor when one
//! is SIGKILLed under load, takes the replica back once it returns, and
//! every event it acknowledged is stored exactly once.
//!
//! Needs `NUDGE_TEST_DATABASE_URL` (see `nudge_e2e::postgres`) and
//! `cargo build --bins`.

// `support` is shared with `e2e.rs`; this binary uses only part of it.
#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use nudge_e2e::metrics::metric_value;
use nudge_e2e::{Agent, ControlPlane};
use support::load::{LoadSpec, Progress, run_clients, wait_for_acks};
use support::{assert_delivered_exactly_once, setup, wait_until};

/// New events a control-plane process stored since it started.
async fn ingested(control_plane: &ControlPlane) -> f64 {
    let text = control_plane.metrics().await.unwrap();
    metric_value(&text, "nudge_cp_events_ingested_total", None).unwrap_or(0.0)
}

async fn agent_metric(agent: &Agent, name: &str, label: Option<&str>) -> f64 {
    metric_value(&agent.metrics().await.unwrap(), name, label).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_under_load_loses_nothing_and_the_agent_ships_through_the_other() {
    let database = nudge_e2e::postgres::fresh_database().await;
    let replica = || {
        ControlPlane::new(setup())
            .unwrap()
            .with_env([("NUDGE_CP_DATABASE_URL", database.as_str())])
    };
    let (mut a, mut b) = (replica(), replica());
    // One after the other: the first runs the migrations.
    a.start().await.unwrap();
    b.start().await.unwrap();
    let agent = Agent::started(setup(), &format!("{},{}", a.grpc_url(), b.grpc_url()), &[])
        .await
        .unwrap();

    let spec = LoadSpec {
        intake: agent.intake,
        run: format!("failover-{}", std::process::id()),
        users: 10,
        events_per_client: None,
        agent_assigned_ids: false,
        must_succeed: true,
        pad: 64,
    };
    let progress = Arc::new(Progress::default());
    let clients = {
        let (spec, progress) = (spec.clone(), progress.clone());
        tokio::spawn(async move { run_clients(&spec, 10, progress).await })
    };

    // Both replicas take batches while both are up.
    wait_for_acks(&progress, 1_000).await;
    wait_until("both replicas have stored events", || async {
        ingested(&a).await > 0.0 && ingested(&b).await > 0.0
    })
    .await;

    a.process.kill();
    let acked_at_kill = progress.acked.load(Ordering::Relaxed);
    let b_at_kill = ingested(&b).await;
    wait_for_acks(&progress, acked_at_kill + 1_500).await;
    wait_until(
        "the survivor stores what is sent after the kill",
        || async { ingested(&b).await > b_at_kill },
    )
    .await;
    wait_until("a push to the dead replica moved to the other", || async {
        agent_metric(&agent, "nudge_agent_replica_failovers_total", None).await >= 1.0
    })
    .await;

    // The replica comes back and the agent uses it again.
    a.start().await.unwrap();
    let acked_at_restart = progress.acked.load(Ordering::Relaxed);
    wait_until("the restarted replica takes batches again", || async {
        ingested(&a).await > 0.0
    })
    .await;
    wait_for_acks(&progress, acked_at_restart + 500).await;
    progress.stop.store(true, Ordering::Relaxed);
    let outcome = clients.await.unwrap();
    assert_eq!(outcome.failed_requests, 0, "{:?}", outcome.failures);

    // Read through the survivor: both replicas store into one database.
    assert_delivered_exactly_once(
        &b,
        &agent,
        &spec.user_names(),
        &outcome.acked,
        Some(&outcome.attempted),
    )
    .await;
    let pushes_to_a = agent_metric(
        &agent,
        "nudge_agent_replica_pushes_total",
        Some(&format!("replica=\"{}\"", a.grpc)),
    )
    .await;
    assert!(pushes_to_a > 0.0, "pushes to the first replica are counted");
    // Each push the dead replica failed was taken by the other at once:
    // the shipper itself never saw a failure, so it never backed off.
    assert_eq!(
        agent_metric(
            &agent,
            "nudge_agent_ship_failures_total",
            Some("kind=\"retriable\"")
        )
        .await,
        0.0,
        "no push failed on both replicas"
    );
}
