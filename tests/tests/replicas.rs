//! Issue 13 against the real programs: three control-plane replicas on one
//! PostgreSQL database and two agents that know every replica, under a
//! steady load of tracked events whose rule sends a webhook to a local
//! receiver, while a replica is SIGKILLed and restarted ten times.
//!
//! What must hold at the end, read from the database and the receiver:
//! every event an agent acknowledged is stored once; the rule fired once
//! per event (one notification each); the receiver got a webhook for every
//! notification, correctly signed; a `webhook-id` seen twice comes only
//! from a kill between the receiver's answer and its record (counted and
//! printed, bounded by what the killed replicas had in flight); and the
//! survivors own every feed partition between them.
//!
//! Run `cargo build --bins` first; needs `NUDGE_TEST_DATABASE_URL`
//! (`scripts/test` starts a throwaway PostgreSQL).

#[allow(dead_code)]
mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

use nudge_e2e::metrics::metric_value;
use nudge_e2e::postgres::{Cluster, fresh_database};
use nudge_e2e::{Agent, ControlPlane};
use support::load::{LoadSpec, Progress, run_clients};
use support::webhook::Receiver;
use support::{setup, wait_until};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const KILLS: usize = 10;
/// The webhook channel's concurrency: what one replica can have in flight.
const WEBHOOK_CONCURRENCY: usize = 4;

fn engine_config(webhook_url: &str) -> String {
    format!(
        r#"
[retry]
initial = "200ms"
max = "2s"
max_attempts = 50

[channels.webhook]
secret = "{SECRET}"
allow_private_destinations = true

[concurrency]
webhook = {WEBHOOK_CONCURRENCY}

[types.welcome]
channels = ["webhook"]
webhook_url = "{webhook_url}"

[types.welcome.templates.fallback]
subject = "Welcome"
text = "Welcome aboard."

[[rules]]
name = "welcome"
on = "Signed Up"
notify = "welcome"
"#
    )
}

async fn scalar(database: &sqlx::PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(database).await.unwrap()
}

/// The sum of `name` (only samples with `label`, if given) in a
/// replica's scrape; 0 when absent.
async fn metric(control_plane: &ControlPlane, name: &str, label: Option<&str>) -> f64 {
    let text = control_plane.metrics().await.unwrap();
    metric_value(&text, name, label).unwrap_or(0.0)
}

/// Three replicas on `database_url` with quick handovers, started; `env`
/// adds settings.
async fn three_replicas(database_url: &str, env: &[(&str, &str)]) -> Vec<ControlPlane> {
    let mut replicas = Vec::new();
    for index in 0..3 {
        let name = format!("cp{index}");
        let mut replica = ControlPlane::new(setup())
            .unwrap()
            .with_env([
                ("NUDGE_CP_DATABASE_URL", database_url),
                // Quick handovers, so the tests do not wait minutes.
                ("NUDGE_CP_LEASE_TTL", "3s"),
                ("NUDGE_CP_DELIVERY_CLAIM_TTL", "10s"),
                ("NUDGE_CP_REPLICA_NAME", name.as_str()),
            ])
            .with_env(env.iter().copied());
        replica.start().await.unwrap();
        replicas.push(replica);
    }
    replicas
}

/// What agents put in `NUDGE_AGENT_CONTROL_PLANE` to use every replica.
fn every_replica(replicas: &[ControlPlane]) -> String {
    replicas
        .iter()
        .map(ControlPlane::grpc_url)
        .collect::<Vec<_>>()
        .join(",")
}

/// Waits until the replicas hold the 32 feed partitions between them and
/// none sees an unowned one.
async fn wait_until_the_feed_is_owned(replicas: &[ControlPlane]) {
    wait_until("every partition owned and none twice", || async {
        let mut held = 0.0;
        let mut unowned = 0.0;
        for replica in replicas {
            held += metric(
                replica,
                "nudge_cp_leases_held",
                Some("kind=\"feed_partition\""),
            )
            .await;
            unowned += metric(replica, "nudge_cp_feed_partitions_unowned", None).await;
        }
        held == 32.0 && unowned == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_lose_and_repeat_nothing_while_replicas_are_killed() {
    let receiver = Receiver::start(SECRET).await;
    let database_url = fresh_database().await;
    let config = tempfile::tempdir().unwrap();
    let config_path = config.path().join("nudge.toml");
    std::fs::write(&config_path, engine_config(&receiver.url)).unwrap();

    let mut replicas = three_replicas(
        &database_url,
        &[("NUDGE_CP_CONFIG", config_path.to_str().unwrap())],
    )
    .await;
    let targets = every_replica(&replicas);
    let agents = Arc::new([
        Agent::started(setup(), &targets, &[]).await.unwrap(),
        Agent::started(setup(), &targets, &[]).await.unwrap(),
    ]);

    // A steady load: one sign-up per user, alternating agents.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (agents, stop) = (Arc::clone(&agents), Arc::clone(&stop));
        async move {
            let mut acked = Vec::new();
            let mut index = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("signup-{index}");
                let body = json!({
                    "userId": format!("user-{index}"),
                    "event": "Signed Up",
                    "messageId": id,
                });
                let reply = agents[index % 2].post("/v1/track", &body).await.unwrap();
                if reply.is_success() {
                    acked.push(id);
                }
                index += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            acked
        }
    });

    // The chaos: a replica SIGKILLed and restarted, ten times, each one
    // in turn and at uneven intervals.
    for round in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(1200 + 350 * (round as u64 % 4))).await;
        let victim = (round * 2 + round / 3) % replicas.len();
        replicas[victim].process.kill();
        tokio::time::sleep(Duration::from_millis(400)).await;
        replicas[victim].start().await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = load.await.unwrap();
    let acked_set: HashSet<&str> = acked.iter().map(String::as_str).collect();
    assert!(
        acked.len() > 500,
        "a steady load ran: {} acked",
        acked.len()
    );

    let database = sqlx::PgPool::connect(&database_url).await.unwrap();
    // Every acked event stored, once.
    let expected = i64::try_from(acked.len()).unwrap();
    wait_until("every acked event is stored", || async {
        scalar(&database, "SELECT count(*) FROM event_ids").await >= expected
    })
    .await;
    let stored: Vec<String> = sqlx::query_scalar("SELECT id FROM event_ids")
        .fetch_all(&database)
        .await
        .unwrap();
    let stored_set: HashSet<&str> = stored.iter().map(String::as_str).collect();
    assert!(
        acked_set.is_subset(&stored_set),
        "acked but not stored: {:?}",
        acked_set
            .difference(&stored_set)
            .take(10)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        scalar(&database, "SELECT count(*) FROM events").await,
        i64::try_from(stored.len()).unwrap(),
        "one event row per id: nothing stored twice"
    );

    // The rule fired once per stored sign-up, and each notification's
    // webhook arrived.
    let signups = i64::try_from(stored.len()).unwrap();
    wait_until("a webhook for every notification", || async {
        let notified: HashSet<String> = receiver
            .hooks()
            .iter()
            .filter_map(|hook| Some(hook.body["notification_id"].as_str()?.to_owned()))
            .collect();
        i64::try_from(notified.len()).unwrap() >= signups
    })
    .await;
    // A chance to fire a rule twice or send a webhook again, had it been
    // planned or claimed twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        scalar(&database, "SELECT count(*) FROM notifications").await,
        signups,
        "one notification per sign-up"
    );
    assert_eq!(
        scalar(
            &database,
            "SELECT count(DISTINCT source_event_id) FROM notifications"
        )
        .await,
        signups
    );
    let hooks = receiver.hooks();
    assert!(
        hooks.iter().all(|hook| hook.signature_valid),
        "every webhook signed"
    );
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for hook in &hooks {
        *per_id.entry(hook.webhook_id.as_str()).or_default() += 1;
    }
    assert_eq!(
        i64::try_from(per_id.len()).unwrap(),
        signups,
        "one webhook-id per notification"
    );
    let repeated = hooks.len() - per_id.len();
    println!(
        "replicas: {} events acked and stored once, {} webhooks for {} notifications \
         ({repeated} repeated webhook-ids after {KILLS} SIGKILLs)",
        acked.len(),
        hooks.len(),
        per_id.len()
    );
    // A repeat is a send whose outcome the killed replica never recorded:
    // at most what it had in flight (claimed, not yet recorded) per kill.
    assert!(
        repeated <= KILLS * WEBHOOK_CONCURRENCY * 2,
        "{repeated} repeated webhooks after {KILLS} kills"
    );

    // The survivors own the whole feed between them.
    wait_until_the_feed_is_owned(&replicas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_three_replicas_costs_readiness_not_events() {
    // A server of this test's own: it is crashed and started again.
    let cluster = Cluster::start(&[]).unwrap();
    let url = cluster.create_database("nudge").await.unwrap();
    let replicas = three_replicas(&url, &[]).await;
    let agent = Agent::started(setup(), &every_replica(&replicas), &[])
        .await
        .unwrap();
    let client = nudge_e2e::http::client();
    let ready = |replica: &ControlPlane| {
        let (client, url) = (client.clone(), format!("http://{}/readyz", replica.admin));
        async move {
            client
                .get(&url)
                .send()
                .await
                .is_ok_and(|response| response.status().is_success())
        }
    };

    let spec = LoadSpec {
        intake: agent.intake,
        run: "pg-restart".into(),
        users: 40,
        events_per_client: None,
        agent_assigned_ids: false,
        must_succeed: false,
        pad: 32,
    };
    let progress = Arc::new(Progress::default());
    let load = tokio::spawn({
        let (spec, progress) = (spec.clone(), Arc::clone(&progress));
        async move { run_clients(&spec, 4, progress).await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.stop_immediately().unwrap();
    for replica in &replicas {
        wait_until("every replica reports not ready", || async {
            !ready(replica).await
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.restart().unwrap();
    for replica in &replicas {
        wait_until("every replica is ready again by itself", || ready(replica)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    progress.stop.store(true, Ordering::Relaxed);
    let outcome = load.await.unwrap();
    assert_eq!(
        outcome.failed_requests, 0,
        "the agent accepted throughout: {:?}",
        outcome.failures
    );

    let database = sqlx::PgPool::connect(&url).await.unwrap();
    let expected = i64::try_from(outcome.acked.len()).unwrap();
    wait_until("every acked event is stored", || async {
        scalar(&database, "SELECT count(*) FROM event_ids").await >= expected
    })
    .await;
    let stored: HashSet<String> = sqlx::query_scalar("SELECT id FROM event_ids")
        .fetch_all(&database)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert!(
        outcome.acked.is_subset(&stored),
        "acked but lost: {:?}",
        outcome
            .acked
            .difference(&stored)
            .take(10)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        scalar(&database, "SELECT count(*) FROM events").await,
        i64::try_from(stored.len()).unwrap(),
        "nothing stored twice"
    );
    wait_until_the_feed_is_owned(&replicas).await;
}

/// `nudge-control-plane migrate` (the chart's pre-upgrade hook Job):
/// migrates an empty database and exits 0, again with nothing to do, and
/// exits 64 naming the setting when the database cannot be reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migrate_command_migrates_once_and_exits() {
    let url = fresh_database().await;
    let data = tempfile::tempdir().unwrap();
    let migrate = |url: &str| {
        std::process::Command::new(support::binary("nudge-control-plane"))
            .arg("migrate")
            .env("NUDGE_CP_DATABASE_URL", url)
            .env("NUDGE_CP_DATA_DIR", data.path())
            .env("NUDGE_CP_DATABASE_CONNECT_TIMEOUT", "2s")
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    let database = sqlx::PgPool::connect(&url).await.unwrap();
    for run in ["first", "second"] {
        let output = migrate(&url);
        assert!(
            output.status.success(),
            "{run} run: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let versions = scalar(&database, "SELECT count(*) FROM schema_migrations").await;
        let newest = scalar(&database, "SELECT max(version) FROM schema_migrations").await;
        let latest = nudge_control_plane::storage::latest_schema_version();
        assert_eq!(
            (versions, newest),
            (latest, latest),
            "{run} run: every migration once"
        );
    }
    assert_eq!(
        scalar(&database, "SELECT count(*) FROM leases").await,
        0,
        "migrating starts nothing"
    );

    let unreachable = format!(
        "postgres://nudge@{}/nudge",
        nudge_e2e::ports::free_loopback()
    );
    let output = migrate(&unreachable);
    assert_eq!(output.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("NUDGE_CP_DATABASE_URL"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
