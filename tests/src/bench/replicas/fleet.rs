//! The programs of one row of the replicas section: N control planes on one
//! PostgreSQL database (each on its own ports and data directory, one
//! engine file, a short lease TTL) and agents spread over them, plus what
//! their `/metrics` say about the event feed's partitions.
//!
//! Promises: [`Fleet::start`] returns once every replica is ready and the
//! feed's [`PARTITIONS`] are balanced (every one held, none unowned, no
//! replica above its fair share), so a measurement never includes the
//! start-up hand-over; dropping a fleet SIGKILLs its programs.

use std::time::{Duration, Instant};

use crate::metrics::metric_value;
use crate::{Agent, ControlPlane, Setup};

use super::super::Result;
use super::super::procstat::cpu_seconds;

/// The event feed's partitions (`FEED_PARTITIONS` in the control plane).
pub const PARTITIONS: usize = 32;
/// How long replicas may take to share the partitions out after a start.
const BALANCE_LIMIT: Duration = Duration::from_secs(60);

pub struct Fleet {
    pub replicas: Vec<ControlPlane>,
    pub agents: Vec<Agent>,
}

/// Where every agent ships: all replicas, as a comma-separated list
/// (`NUDGE_AGENT_CONTROL_PLANE`), so each agent spreads its batches over
/// the replicas itself and fails over when one is killed.
pub fn agent_target(replicas: &[ControlPlane]) -> String {
    replicas
        .iter()
        .map(ControlPlane::grpc_url)
        .collect::<Vec<_>>()
        .join(",")
}

/// How the feed's partitions stand, summed over some replicas' scrapes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeedState {
    /// `nudge_cp_leases_held{kind="feed_partition"}`, summed.
    pub held: f64,
    /// `nudge_cp_feed_partitions_unowned`, summed (each replica's view).
    pub unowned: f64,
    /// The most any one replica holds.
    pub most: f64,
}

impl FeedState {
    /// Every partition held by the replicas read, and none unowned in any
    /// one's view.
    pub fn all_served(&self) -> bool {
        self.held == PARTITIONS as f64 && self.unowned == 0.0
    }
}

/// The feed partitions a replica holds, from one scrape.
pub fn partitions_held(metrics: &str) -> f64 {
    metric_value(
        metrics,
        "nudge_cp_leases_held",
        Some("kind=\"feed_partition\""),
    )
    .unwrap_or(0.0)
}

/// [`FeedState`] over `replicas`.
pub async fn feed_state(replicas: &[&ControlPlane]) -> Result<FeedState> {
    let mut state = FeedState {
        held: 0.0,
        unowned: 0.0,
        most: 0.0,
    };
    for replica in replicas {
        let text = replica.metrics().await?;
        let held = partitions_held(&text);
        state.held += held;
        state.most = state.most.max(held);
        // Absent before its first lease refresh: not yet a view at all.
        state.unowned +=
            metric_value(&text, "nudge_cp_feed_partitions_unowned", None).unwrap_or(f64::NAN);
    }
    Ok(state)
}

impl Fleet {
    /// Starts `replicas` control planes with `replica_env` (the database,
    /// the engine file, the lease TTL) one after another, then `agents`
    /// agents (see [`agent_target`]), and waits until the partitions are
    /// balanced.
    pub async fn start(
        setup: &Setup,
        replica_env: &[(String, String)],
        replicas: usize,
        agents: usize,
    ) -> Result<Fleet> {
        let mut fleet = Fleet {
            replicas: Vec::with_capacity(replicas),
            agents: Vec::with_capacity(agents),
        };
        for index in 0..replicas {
            let name = format!("bench-cp{index}");
            let mut replica = ControlPlane::new(setup)?
                .with_env(replica_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .with_env([("NUDGE_CP_REPLICA_NAME", name.as_str())]);
            replica.start().await?;
            fleet.replicas.push(replica);
        }
        for index in 0..agents {
            let id = format!("bench-agent-{index}");
            let target = agent_target(&fleet.replicas);
            let agent = Agent::started(setup, &target, &[("NUDGE_AGENT_ID", id.as_str())]).await?;
            fleet.agents.push(agent);
        }
        fleet.until_balanced().await?;
        Ok(fleet)
    }

    /// Waits until every partition is held, none is unowned and no replica
    /// holds more than ⌈32 / N⌉ (what each aims at).
    pub async fn until_balanced(&self) -> Result<()> {
        let fair = PARTITIONS.div_ceil(self.replicas.len()) as f64;
        let all: Vec<&ControlPlane> = self.replicas.iter().collect();
        let deadline = Instant::now() + BALANCE_LIMIT;
        loop {
            let state = feed_state(&all).await?;
            if state.all_served() && state.most <= fair {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} replicas did not share the feed's partitions out within {}s: {state:?}",
                    self.replicas.len(),
                    BALANCE_LIMIT.as_secs()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// CPU milliseconds (user + system) each replica has used so far.
    pub fn cpu_ms(&self) -> Vec<f64> {
        self.replicas
            .iter()
            .map(|replica| {
                let [user, system] = cpu_seconds(&replica.process.pid().to_string());
                (user + system) * 1e3
            })
            .collect()
    }

    /// Every replica's `/metrics`, in order.
    pub async fn scrapes(&self) -> Result<Vec<String>> {
        let mut texts = Vec::with_capacity(self.replicas.len());
        for replica in &self.replicas {
            texts.push(replica.metrics().await?);
        }
        Ok(texts)
    }
}
