//! The two measured phases of a replicas row, driven through the fleet's
//! agents exactly as the single-replica sections drive one agent:
//!
//! * [`ingest`]: the `e2e` section's measurement, `/v1/batch` of 100
//!   events from 16 closed-loop workers (split over the agents) until the
//!   shared database has stored them all ([`until_stored`]);
//! * [`notify`]: the `notify` section's single `/v1/notify` calls
//!   ([`send_notifies`]), webhook type, until the webhook receiver has
//!   N more requests. (The `notify` section waits for the control plane's
//!   `sent` counter instead; scraping every replica's `/metrics` every
//!   20 ms would cost the replicas CPU in proportion to their number, and
//!   the receiver's count, read in this process, costs them nothing.)
//!
//! Promises: each phase's CPU is the difference of `/proc` readings of
//! every replica (and of PostgreSQL: postmaster and backends) taken just
//! before the first request and after the phase's work is done: for
//! ingest, the engines have planned every event (the feed's lag is back to
//! 0 on every replica); for notifications, the replicas have recorded
//! every delivery as `sent`. So the CPU per item holds its whole cost, not
//! only the part before the figure's clock stops.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;

use super::super::load::{Stop, Target, run_load};
use super::super::notify::{DELIVERIES, WebhookPeer, send_notifies, sum};
use super::super::procstat::tree_cpu_seconds;
use super::super::scenarios::until_stored;
use super::super::{BATCH_EVENTS, Result};
use super::fleet::Fleet;
use crate::metrics::metric_value;

/// The `e2e` section's closed-loop workers, shared out over the agents.
pub const INGEST_WORKERS: usize = 16;
/// The notification phase's channel: a send to a peer (the in-process
/// webhook receiver) through the claims every replica takes.
pub const CHANNEL: &str = "webhook";
/// Users the notifies go to: many, so every feed partition (and every
/// replica) plans some of them.
pub const NOTIFY_USERS: usize = 256;
/// How long a phase may take before the run fails.
const PHASE_LIMIT: Duration = Duration::from_secs(300);
/// How often the replicas' `/metrics` are read while waiting for the
/// work behind a figure to finish (not for the figure itself).
const POLL: Duration = Duration::from_millis(50);
/// How often the webhook receiver's count is read (in this process).
const RECEIVER_POLL: Duration = Duration::from_millis(5);

/// What a phase measured, once or over repeats ([`Phase::merge`]).
#[derive(Debug, Clone, Default)]
pub struct Phase {
    /// Events stored, or notifications sent.
    pub count: u64,
    /// First request → the last one stored (sent), summed over repeats.
    pub secs: f64,
    /// Each repeat's items per second.
    pub rates: Vec<f64>,
    /// CPU milliseconds of each replica over the phase.
    pub cpu_ms: Vec<f64>,
    /// CPU milliseconds of PostgreSQL over the phase.
    pub database_cpu_ms: Option<f64>,
    /// Requests the agents refused and that were sent again.
    pub refusals: u64,
    /// The replicas' ingest transactions over the phase (ingest only).
    pub commits: Option<Commits>,
}

/// Ingest transactions, from `nudge_cp_storage_operation_duration_seconds
/// {operation="ingest"}` summed over the replicas: each replica merges the
/// pushes in flight into one transaction (group commit), and on PostgreSQL
/// the transactions of all replicas take turns on one advisory lock, so
/// the count says how well pushes are merged and the time includes the
/// wait for the other replicas' turns.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Commits {
    pub count: f64,
    /// Seconds spent in them, waits for the lock included.
    pub secs: f64,
}

impl Commits {
    const NAME: &str = "nudge_cp_storage_operation_duration_seconds";
    const LABEL: &str = "operation=\"ingest\"";

    /// Summed over some scrapes.
    fn read(scrapes: &[String]) -> Commits {
        let total = |suffix: &str| -> f64 {
            let name = format!("{}_{suffix}", Self::NAME);
            scrapes
                .iter()
                .filter_map(|text| metric_value(text, &name, Some(Self::LABEL)))
                .sum()
        };
        Commits {
            count: total("count"),
            secs: total("sum"),
        }
    }

    fn since(self, earlier: Commits) -> Commits {
        Commits {
            count: self.count - earlier.count,
            secs: self.secs - earlier.secs,
        }
    }

    fn plus(self, other: Commits) -> Commits {
        Commits {
            count: self.count + other.count,
            secs: self.secs + other.secs,
        }
    }

    /// Mean milliseconds of one (lock waits included).
    pub fn mean_ms(&self) -> f64 {
        self.secs * 1e3 / self.count
    }
}

impl Phase {
    /// The median of the repeats' rates: one repeat lasts a second or
    /// two, and other work on a shared machine can land in any one.
    pub fn per_sec(&self) -> f64 {
        let mut sorted = self.rates.clone();
        sorted.sort_by(f64::total_cmp);
        match sorted.len() {
            0 => self.count as f64 / self.secs,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        }
    }

    /// Repeats of one phase as one: counts, times and CPU added up, each
    /// repeat's rate kept.
    pub fn merge(phases: &[Phase]) -> Phase {
        let mut merged = Phase::default();
        for phase in phases {
            merged.count += phase.count;
            merged.secs += phase.secs;
            merged.rates.extend(&phase.rates);
            if merged.cpu_ms.is_empty() {
                merged.cpu_ms = vec![0.0; phase.cpu_ms.len()];
            }
            for (total, ms) in merged.cpu_ms.iter_mut().zip(&phase.cpu_ms) {
                *total += ms;
            }
            merged.database_cpu_ms = match (merged.database_cpu_ms, phase.database_cpu_ms) {
                (Some(total), Some(ms)) => Some(total + ms),
                (None, ms) => ms,
                (total, None) => total,
            };
            merged.refusals += phase.refusals;
            merged.commits = match (merged.commits, phase.commits) {
                (Some(total), Some(commits)) => Some(total.plus(commits)),
                (None, commits) => commits,
                (total, None) => total,
            };
        }
        merged
    }

    /// Every replica's CPU milliseconds per 1,000 of the phase's items.
    pub fn cpu_ms_per_1000(&self) -> f64 {
        self.cpu_ms.iter().sum::<f64>() / self.thousands()
    }

    /// Each replica's share of that.
    pub fn cpu_ms_per_1000_each(&self) -> Vec<f64> {
        self.cpu_ms.iter().map(|ms| ms / self.thousands()).collect()
    }

    pub fn database_cpu_ms_per_1000(&self) -> Option<f64> {
        self.database_cpu_ms.map(|ms| ms / self.thousands())
    }

    fn thousands(&self) -> f64 {
        self.count as f64 / 1000.0
    }
}

/// CPU readings of the replicas and the database, taken together.
struct CpuMark {
    replicas: Vec<f64>,
    database: Option<f64>,
}

impl CpuMark {
    fn now(fleet: &Fleet, database_pid: Option<u32>) -> Self {
        CpuMark {
            replicas: fleet.cpu_ms(),
            database: database_pid.map(|pid| tree_cpu_seconds(pid) * 1e3),
        }
    }

    /// (per replica, database) milliseconds since `self`.
    fn since(&self, fleet: &Fleet, database_pid: Option<u32>) -> (Vec<f64>, Option<f64>) {
        let later = CpuMark::now(fleet, database_pid);
        let replicas = later
            .replicas
            .iter()
            .zip(&self.replicas)
            .map(|(after, before)| after - before)
            .collect();
        let database = later.database.zip(self.database).map(|(a, b)| a - b);
        (replicas, database)
    }
}

/// `n` split into `parts` shares that differ by at most one.
fn shares(n: u64, parts: usize) -> Vec<u64> {
    let parts_u64 = parts as u64;
    (0..parts_u64)
        .map(|i| n / parts_u64 + u64::from(i < n % parts_u64))
        .collect()
}

/// `events` (rounded up to whole batches) through the agents until the
/// database holds them all and every engine has planned them.
pub async fn ingest(
    fleet: &Fleet,
    events: usize,
    batch: &Bytes,
    database_pid: Option<u32>,
) -> Result<Phase> {
    let requests = (events as u64).div_ceil(BATCH_EVENTS as u64);
    let agents = fleet.agents.len();
    let workers = INGEST_WORKERS.div_ceil(agents);
    let first = &fleet.replicas[0];
    let expected = first.stored_count().await? + requests * BATCH_EVENTS as u64;
    let targets: Vec<Target> = fleet
        .agents
        .iter()
        .map(|agent| Target {
            addr: agent.intake,
            path: "/v1/batch",
            body: batch.clone(),
        })
        .collect();
    let commits_before = Commits::read(&fleet.scrapes().await?);
    let mark = CpuMark::now(fleet, database_pid);
    let begin = Instant::now();
    let loads = targets
        .iter()
        .zip(shares(requests, agents))
        .map(|(target, count)| run_load(target, workers, Stop::Count(count)));
    let refusals = join_all(loads)
        .await
        .iter()
        .map(|load| load.errors + load.transport_errors)
        .sum();
    until_stored(first, expected, begin + PHASE_LIMIT).await?;
    let secs = begin.elapsed().as_secs_f64();
    until_planned(fleet, begin + PHASE_LIMIT).await?;
    let (cpu_ms, database_cpu_ms) = mark.since(fleet, database_pid);
    let commits = Commits::read(&fleet.scrapes().await?).since(commits_before);
    let count = requests * BATCH_EVENTS as u64;
    Ok(Phase {
        count,
        secs,
        rates: vec![count as f64 / secs],
        cpu_ms,
        database_cpu_ms,
        refusals,
        commits: Some(commits),
    })
}

/// Waits until no replica has an unplanned event in its partitions.
async fn until_planned(fleet: &Fleet, deadline: Instant) -> Result<()> {
    loop {
        let lag: f64 = fleet
            .scrapes()
            .await?
            .iter()
            .map(|text| sum(text, "nudge_cp_engine_feed_lag_seconds", &[]))
            .sum();
        if lag == 0.0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the engines still lag {lag:.1}s (summed) after ingest").into());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Deliveries of [`CHANNEL`] sent, summed over the replicas.
async fn sent(fleet: &Fleet) -> Result<f64> {
    let want = [("channel", CHANNEL), ("outcome", "sent")];
    Ok(fleet
        .scrapes()
        .await?
        .iter()
        .map(|text| sum(text, DELIVERIES, &want))
        .sum())
}

/// `n` notifies of the webhook type, numbered from `first` (a fresh range
/// per call: numbers are idempotency keys), through the agents (`workers`
/// callers shared out over them) until `receiver` has `n` more requests.
pub async fn notify(
    fleet: &Fleet,
    receiver: &WebhookPeer,
    first: u64,
    n: u64,
    workers: usize,
    database_pid: Option<u32>,
) -> Result<Phase> {
    let agents = fleet.agents.len();
    let per_agent = workers.div_ceil(agents);
    let before = sent(fleet).await?;
    let received_before = receiver.received();
    let mark = CpuMark::now(fleet, database_pid);
    let begin = Instant::now();
    let mut start = first;
    let mut sends = Vec::with_capacity(agents);
    for (agent, count) in fleet.agents.iter().zip(shares(n, agents)) {
        let ids = start..start + count;
        start += count;
        sends.push(send_notifies(agent, CHANNEL, ids, per_agent, NOTIFY_USERS));
    }
    let refusals = join_all(sends).await.iter().sum();
    let deadline = begin + PHASE_LIMIT;
    while receiver.received() - received_before < n {
        if Instant::now() > deadline {
            return Err(format!(
                "the receiver got {} of {n} webhooks after {}s",
                receiver.received() - received_before,
                PHASE_LIMIT.as_secs()
            )
            .into());
        }
        tokio::time::sleep(RECEIVER_POLL).await;
    }
    let secs = begin.elapsed().as_secs_f64();
    loop {
        let now = sent(fleet).await?;
        if now - before >= n as f64 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} of {n} webhook deliveries recorded as sent after {}s",
                now - before,
                PHASE_LIMIT.as_secs()
            )
            .into());
        }
        tokio::time::sleep(POLL).await;
    }
    let (cpu_ms, database_cpu_ms) = mark.since(fleet, database_pid);
    Ok(Phase {
        count: n,
        secs,
        rates: vec![n as f64 / secs],
        cpu_ms,
        database_cpu_ms,
        refusals,
        commits: None,
    })
}

#[cfg(test)]
mod tests {
    use super::{Commits, Phase, shares};

    #[test]
    fn repeats_merge_into_sums_and_a_median_rate() {
        let phase = |rate: f64, cpu: f64| Phase {
            count: 1000,
            secs: 1000.0 / rate,
            rates: vec![rate],
            cpu_ms: vec![cpu, 2.0 * cpu],
            database_cpu_ms: Some(cpu),
            refusals: 1,
            commits: Some(Commits {
                count: 2.0,
                secs: 0.1,
            }),
        };
        let merged = Phase::merge(&[phase(100.0, 10.0), phase(300.0, 20.0), phase(200.0, 30.0)]);
        assert_eq!(merged.count, 3000);
        assert_eq!(merged.per_sec(), 200.0);
        assert_eq!(merged.cpu_ms, vec![60.0, 120.0]);
        assert_eq!(merged.cpu_ms_per_1000(), 60.0);
        assert_eq!(merged.database_cpu_ms, Some(60.0));
        assert_eq!(merged.refusals, 3);
        assert_eq!(merged.commits.map(|c| c.count), Some(6.0));
    }

    #[test]
    fn shares_add_up_and_differ_by_at_most_one() {
        assert_eq!(shares(10, 3), vec![4, 3, 3]);
        assert_eq!(shares(2, 3), vec![1, 1, 0]);
        assert_eq!(shares(9, 1), vec![9]);
    }
}
