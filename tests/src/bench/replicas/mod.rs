//! Scenario 10, several control planes on one PostgreSQL database (issue 13,
//! "Benchmark"): what the throughput is with 1 and with N replicas in the
//! same run, what each replica's CPU costs per 1,000 events, and how long a
//! killed replica's share of the event feed waits before it is served again.
//!
//! For each count in `--replicas` (default 1,3), on a fresh database of the
//! bench's own PostgreSQL cluster ([`super::storage::Backing`]): that many
//! control planes ([`fleet`]; lease TTL [`LEASE_TTL`], the same for every
//! row) and as many agents as the largest count (at least 2), spread over
//! the replicas; once the feed's partitions are balanced, the two phases of
//! [`workload`] run [`REPEATS`] times each (ingest end to end as the `e2e`
//! section, webhook notifications as the `notify` section; the median
//! rate is reported, CPU over all repeats), and on the largest count, if 2
//! or more, the [`failover`] ([`failover::ROUNDS`] SIGKILLs, each victim
//! restarted before the next). The ratios compare each row with the row of
//! one replica of the same run.
//!
//! Promises: every row runs the same load through the same number of
//! agents on the same machine, so rows differ only in the replica count;
//! nothing here asserts a speed. Without PostgreSQL's server the section is
//! skipped with the reason printed, unless `--only replicas` asked for it.

pub mod failover;
pub mod fleet;
pub mod report;
pub mod workload;

use std::time::Duration;

use bytes::Bytes;

use super::notify::{WebhookPeer, engine_toml};
use super::{Env, Result};
use crate::ports::free_port;
use failover::PROBE_EVENT;
use fleet::Fleet;
use report::{ReplicasReport, Row};

/// `NUDGE_CP_LEASE_TTL` for every replica of the section: short, so the
/// failover figure (the TTL, give or take a refresh of TTL / 4) is a few
/// seconds, not the default 10 s.
pub const LEASE_TTL: Duration = Duration::from_secs(3);
/// Agents at least, whatever the replica counts.
const MIN_AGENTS: usize = 2;
/// Each phase runs this many times per row and reports the median rate:
/// a phase lasts a second or two, and on a shared machine another
/// program's burst can land in any one of them.
pub const REPEATS: usize = 3;

/// The `notify` section's engine (one type per channel, critical, instant)
/// plus the probe rule of the failover: [`PROBE_EVENT`] → in-app.
fn engine(webhook_url: &str) -> String {
    // No SMTP peer here: nothing listens on the port, no email is sent.
    format!(
        "{}\n[[rules]]\nname = \"failover-probe\"\non = \"{PROBE_EVENT}\"\nnotify = \"bench_in_app\"\n",
        engine_toml(free_port(), webhook_url)
    )
}

/// Runs the section on `backing`, which must be PostgreSQL.
pub async fn scenario_replicas(
    env: &Env,
    backing: &mut super::storage::Backing,
    batch: &Bytes,
) -> Result<ReplicasReport> {
    let options = &env.options;
    let agents = options
        .replicas
        .iter()
        .copied()
        .max()
        .unwrap_or(1)
        .max(MIN_AGENTS);
    let largest = options.replicas.iter().copied().max().unwrap_or(1);
    let webhook = WebhookPeer::start().await?;
    let config_dir = env.setup.data_dir("engine")?;
    let config = config_dir.path().join("nudge.toml");
    std::fs::write(&config, engine(&webhook.url))?;
    let database_pid = backing
        .cluster()
        .and_then(crate::postgres::Cluster::server_pid);

    let mut report = ReplicasReport {
        agents,
        lease_ttl: LEASE_TTL,
        ..ReplicasReport::default()
    };
    let mut failover_done = false;
    for &replicas in &options.replicas {
        eprintln!("  {replicas} replica(s), {agents} agents: starting, balancing the feed");
        let mut replica_env = backing.control_plane_env().await?;
        replica_env.extend([
            ("NUDGE_CP_CONFIG".to_owned(), config.display().to_string()),
            (
                "NUDGE_CP_LEASE_TTL".to_owned(),
                format!("{}s", LEASE_TTL.as_secs()),
            ),
        ]);
        let mut fleet = Fleet::start(&env.setup, &replica_env, replicas, agents).await?;
        eprintln!(
            "  {replicas} replica(s): {} events end to end, {REPEATS} times",
            options.e2e_events
        );
        let mut ingests = Vec::with_capacity(REPEATS);
        for _ in 0..REPEATS {
            ingests.push(workload::ingest(&fleet, options.e2e_events, batch, database_pid).await?);
        }
        eprintln!(
            "  {replicas} replica(s): {} webhook notifies, {REPEATS} times",
            options.notify_count
        );
        let mut notifies = Vec::with_capacity(REPEATS);
        for repeat in 0..REPEATS as u64 {
            notifies.push(
                workload::notify(
                    &fleet,
                    &webhook,
                    repeat * options.notify_count,
                    options.notify_count,
                    options.notify_workers,
                    database_pid,
                )
                .await?,
            );
        }
        report.rows.push(Row {
            replicas,
            ingest: workload::Phase::merge(&ingests),
            notify: workload::Phase::merge(&notifies),
        });
        if replicas == largest && replicas >= 2 && !failover_done {
            eprintln!(
                "  {replicas} replicas: {} SIGKILLs under a light load",
                failover::ROUNDS
            );
            report.failover = Some(failover::measure(&mut fleet, LEASE_TTL).await?);
            failover_done = true;
        }
    }
    if !failover_done {
        report
            .notes
            .push("failover not measured: --replicas has no count of 2 or more".to_owned());
    }
    Ok(report)
}
