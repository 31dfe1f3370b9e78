//! Failover time: how long after a replica is SIGKILLed its feed
//! partitions are served again, under a light steady load.
//!
//! [`ROUNDS`] kills, each of another replica than 0 in turn (agent 0 ships
//! to replica 0, so the load and the probes keep flowing), the victim
//! restarted and the partitions balanced again between rounds: one kill
//! lands at a random point of the survivors' refresh cycle, so one sample
//! alone would say little. A victim's partitions are read from its
//! own `/metrics` (the `partition` labels of
//! `nudge_cp_engine_feed_lag_seconds`, checked against its
//! `nudge_cp_leases_held{kind="feed_partition"}`); a probe user is picked
//! whose partition is one of them ([`feed_partition`], the control plane's
//! stable hash); a [`PROBE_EVENT`] of that user fires a rule (in-app).
//!
//! Two figures, both from the instant of the SIGKILL, polled every
//! [`POLL`]:
//!
//! * **leases moved**: the survivors' `nudge_cp_leases_held{kind=
//!   "feed_partition"}` sum to 32 again and each one's
//!   `nudge_cp_feed_partitions_unowned` is 0;
//! * **planning resumed**: a probe event sent right after the kill has its
//!   notification (the victim's partition was taken and its events
//!   planned), read through the admin API.
//!
//! The same probe before each kill (planned by the victim itself) is the
//! baseline: what a probe costs when nothing fails. Expect between the
//! lease TTL minus and plus one refresh (TTL / 4): the victim last renewed
//! up to one refresh before the kill, its leases expire a TTL after that
//! by the database's clock, then a survivor's next refresh takes them
//! (each survivor takes its share at its own refresh, so "all 32 held"
//! waits for the last of them).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::{Agent, ControlPlane, http};

use super::super::Result;
use super::super::notify::user;
use super::fleet::{Fleet, PARTITIONS, feed_state, partitions_held};

/// The tracked event the probe rule reacts to.
pub const PROBE_EVENT: &str = "Failover Probe";
/// How often the survivors are read after the kill.
pub const POLL: Duration = Duration::from_millis(50);
/// The light load: one tracked event per this, through agent 0.
const LIGHT_PACE: Duration = Duration::from_millis(20);
/// How long either figure may take before the run fails, beyond the TTL.
const LIMIT: Duration = Duration::from_secs(60);

/// Kills per run.
pub const ROUNDS: usize = 3;

#[derive(Debug, Clone, Default)]
pub struct Failover {
    pub replicas: usize,
    pub lease_ttl: Duration,
    pub rounds: Vec<Round>,
    /// Tracked events of the light load acknowledged while it ran.
    pub light_events: u64,
}

/// One kill.
#[derive(Debug, Clone, Default)]
pub struct Round {
    /// Which replica (0-based) was killed.
    pub victim: usize,
    /// Feed partitions it held when it was killed.
    pub victim_partitions: usize,
    /// A probe planned by the victim before the kill: send → notification.
    pub probe_before_secs: f64,
    /// Kill → survivors hold all 32 partitions, none unowned.
    pub leases_moved_secs: f64,
    /// Kill → a probe sent right after it has its notification.
    pub planned_secs: f64,
}

/// The median, least and most of some seconds (NaN for none).
pub fn spread(values: impl Iterator<Item = f64>) -> (f64, f64, f64) {
    let mut sorted: Vec<f64> = values.collect();
    if sorted.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    };
    (median, sorted[0], sorted[sorted.len() - 1])
}

/// The control plane's feed partition of a user id: FNV-1a (64 bit) of
/// its bytes, modulo 32 (`FeedPartition::of` in `control-plane/src/
/// event.rs`, which stores it with every event, so it never changes).
pub fn feed_partition(user_id: &str) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in user_id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % PARTITIONS as u64) as u16
}

/// The partitions `replica` says it holds: the labels of its lag gauge,
/// once their number matches its lease count (the gauge gets a label at
/// the engine's first pass after a lease is taken).
async fn partitions_of(replica: &ControlPlane) -> Result<BTreeSet<u16>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = replica.metrics().await?;
        let labelled: BTreeSet<u16> = text
            .lines()
            .filter_map(|line| line.strip_prefix("nudge_cp_engine_feed_lag_seconds{partition=\""))
            .filter_map(|rest| rest.split('"').next()?.parse().ok())
            .collect();
        let held = partitions_held(&text);
        if !labelled.is_empty() && labelled.len() as f64 == held {
            return Ok(labelled);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the victim holds {held} partitions but labels {} in its lag gauge",
                labelled.len()
            )
            .into());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Probe users of `round` (`failover-probe-R-K`, new ones each round)
/// whose partition is in `partitions`.
fn probe_users(partitions: &BTreeSet<u16>, round: usize) -> impl Iterator<Item = String> + '_ {
    (0u32..)
        .map(move |k| format!("failover-probe-{round}-{k}"))
        .filter(|id| partitions.contains(&feed_partition(id)))
}

/// Tracks [`PROBE_EVENT`] for `user` through `agent`.
async fn send_probe(agent: &Agent, user: &str) -> Result<()> {
    let body = json!({"userId": user, "event": PROBE_EVENT});
    let reply = agent.post("/v1/track", &body).await?;
    if !reply.is_success() {
        return Err(format!("probe refused: {reply:?}").into());
    }
    Ok(())
}

/// Whether `user` has a notification yet (its probe was planned).
async fn planned(replica: &ControlPlane, user: &str) -> Result<bool> {
    Ok(!replica.notifications(user).await?.is_empty())
}

/// Tracked events through `agent` every [`LIGHT_PACE`] until aborted;
/// counts the acknowledged ones.
fn light_load(agent: &Agent, acked: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    let url = agent.url("/v1/track");
    tokio::spawn(async move {
        let client = http::client();
        for i in 0usize.. {
            let body = json!({"userId": user(i % 500), "event": "Order Completed"});
            if let Ok(reply) = http::post_json(&client, &url, &body).await
                && reply.is_success()
            {
                acked.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(LIGHT_PACE).await;
        }
    })
}

/// [`ROUNDS`] kills and their figures (see the module's doc).
pub async fn measure(fleet: &mut Fleet, lease_ttl: Duration) -> Result<Failover> {
    let replicas = fleet.replicas.len();
    if replicas < 2 {
        return Err("failover needs two replicas or more".into());
    }
    let acked = Arc::new(AtomicU64::new(0));
    let load = light_load(&fleet.agents[0], Arc::clone(&acked));
    let mut rounds = Vec::with_capacity(ROUNDS);
    let mut outcome = Ok(());
    for round in 0..ROUNDS {
        // Replicas N-1, N-2, …, 1, N-1, …: never 0.
        let victim = replicas - 1 - round % (replicas - 1);
        match one_round(fleet, round, victim, lease_ttl).await {
            Ok(figures) => rounds.push(figures),
            Err(error) => {
                outcome = Err(error);
                break;
            }
        }
    }
    load.abort();
    outcome?;
    Ok(Failover {
        replicas,
        lease_ttl,
        rounds,
        light_events: acked.load(Ordering::Relaxed),
    })
}

/// One kill of `victim`, then its restart and the balance again.
async fn one_round(
    fleet: &mut Fleet,
    round: usize,
    victim: usize,
    lease_ttl: Duration,
) -> Result<Round> {
    let partitions = partitions_of(&fleet.replicas[victim]).await?;
    let mut probes = probe_users(&partitions, round);
    let (before_user, after_user) = match (probes.next(), probes.next()) {
        (Some(before), Some(after)) => (before, after),
        _ => return Err("no probe user in the victim's partitions".into()),
    };
    let deadline = |from: Instant| from + lease_ttl + LIMIT;
    // The baseline: the victim plans the probe itself.
    let sent = Instant::now();
    send_probe(&fleet.agents[0], &before_user).await?;
    while !planned(&fleet.replicas[0], &before_user).await? {
        if Instant::now() > deadline(sent) {
            return Err("the probe before the kill was never planned".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let probe_before_secs = sent.elapsed().as_secs_f64();
    // A moment of steady load, so the kill lands mid-stream.
    tokio::time::sleep(Duration::from_secs(1)).await;

    fleet.replicas[victim].process.kill();
    let killed = Instant::now();
    send_probe(&fleet.agents[0], &after_user).await?;
    let survivors: Vec<&ControlPlane> = fleet
        .replicas
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != victim)
        .map(|(_, replica)| replica)
        .collect();
    let (mut leases_moved, mut planned_at) = (None, None);
    while leases_moved.is_none() || planned_at.is_none() {
        if leases_moved.is_none() && feed_state(&survivors).await?.all_served() {
            leases_moved = Some(killed.elapsed().as_secs_f64());
        }
        if planned_at.is_none() && planned(survivors[0], &after_user).await? {
            planned_at = Some(killed.elapsed().as_secs_f64());
        }
        if Instant::now() > deadline(killed) {
            return Err(format!(
                "after the SIGKILL of replica {victim}: leases moved {leases_moved:?} s, probe planned {planned_at:?} s, limit {}s",
                (lease_ttl + LIMIT).as_secs()
            )
            .into());
        }
        tokio::time::sleep(POLL).await;
    }
    fleet.replicas[victim].start().await?;
    fleet.until_balanced().await?;
    Ok(Round {
        victim,
        victim_partitions: partitions.len(),
        probe_before_secs,
        leases_moved_secs: leases_moved.unwrap_or(f64::NAN),
        planned_secs: planned_at.unwrap_or(f64::NAN),
    })
}

#[cfg(test)]
mod tests {
    use super::{feed_partition, spread};

    #[test]
    fn spread_is_median_least_and_most() {
        assert_eq!(spread([3.0, 1.0, 2.0].into_iter()), (2.0, 1.0, 3.0));
        assert_eq!(spread([4.0, 1.0].into_iter()), (2.5, 1.0, 4.0));
        assert!(spread(std::iter::empty()).0.is_nan());
    }

    #[test]
    fn partitions_by_fnv1a_of_the_user_id() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c; of "" the offset basis.
        assert_eq!(feed_partition("a"), (0xaf63_dc4c_8601_ec8c_u64 % 32) as u16);
        assert_eq!(feed_partition(""), (0xcbf2_9ce4_8422_2325_u64 % 32) as u16);
        assert!((0..1000).all(|i| feed_partition(&format!("u{i}")) < 32));
    }

    #[test]
    fn agrees_with_the_control_planes_own_partitioning() {
        use nudge_control_plane::event::{Event, FeedPartition};
        for i in 0..200 {
            let user = format!("failover-probe-{i}");
            let event: Event = serde_json::from_value(serde_json::json!({
                "id": format!("e{i}"),
                "user_id": user,
                "ingested_at": "2026-12-04T00:00:00Z",
                "agent_id": "bench",
                "type": "track",
                "event": "Failover Probe",
                "properties": {},
            }))
            .unwrap();
            assert_eq!(feed_partition(&user), FeedPartition::of(&event).0, "{user}");
        }
    }
}
