//! Housekeeping: every periodic job that keeps stored data bounded,
//! scheduled in one place. What a job removes is decided by the store
//! that owns the data (`prune_*`, `apply_retention`, `cleanup`); this
//! module only says when, and reports how it went.
//!
//! | task | every | removes |
//! |---|---|---|
//! | `partitions` | 1 h | nothing: makes the time partitions of events and event ids for the coming weeks (PostgreSQL; `storage::partitions`) |
//! | `dedupe` | 1 h | event ids older than the dedupe window (`NUDGE_CP_DEDUPE_WINDOW`; on PostgreSQL by whole weeks); refreshes the store-size gauges |
//! | `retention` | 1 h | `[retention]`: old events; old notifications with their deliveries, inbox items and digest folds; long attempt logs |
//! | `devices` | 6 h | `[devices]`: deactivates stale devices, deletes long-deactivated ones |
//! | `idempotency_keys` | 1 h | notify idempotency keys past their 48 h window |
//! | `throttle_decisions` | 1 h | throttle decisions older than the longest window ([`crate::throttle::MAX_WINDOW`]) |
//! | `inbox_changes` | 1 h | live-stream change-log entries older than [`INBOX_CHANGES_KEPT`] (a client away longer reloads its list) |
//! | `trigger_markers` | 1 h | finished delayed-trigger markers older than the dedupe window (an older event cannot be replayed: it is not a duplicate any more) |
//! | `leases` | 1 h | leases expired for more than an hour (heartbeats of replicas long gone) |
//! | `callback_ids` | 1 h | provider callback ids expired for more than an hour (their signed time is past the tolerance: a replay is refused as stale) |
//!
//! # Promises
//!
//! * **Once per interval across replicas.** Each job is due at start-up,
//!   then at its interval; every replica checks every minute (or the
//!   interval, if shorter) whether it is due, and the one that takes the
//!   job's lease (`job/housekeeping/NAME`, held for the interval: see
//!   `storage::leases::take_due`) runs it; the others skip that turn. So a
//!   pass runs once per interval whatever the number of replicas, and
//!   still runs when the replica that ran the last one is gone. A pass
//!   that fails gives its turn back, so the next check (of any replica)
//!   retries it. (Without leases, as in unit tests, every tick runs the
//!   job.)
//! * A failed pass is logged, counted
//!   (`nudge_cp_housekeeping_failures_total{task}`) and retried at the next
//!   tick; it never stops the server or another job.
//! * A pass that started is not cut short by shutdown: passes delete in
//!   short chunks, and the stores must not be closed under one.
//! * `nudge_cp_housekeeping_removed_total{task}` counts what passes
//!   removed; `nudge_cp_housekeeping_last_success_timestamp_seconds{task}`
//!   is the end of the last pass that succeeded on this replica (alert on
//!   the `max` across replicas when it stops moving).

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use jiff::Timestamp;
use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// How long the inbox's change log is kept: a live stream away longer
/// gets a `reset` and reloads the list.
pub const INBOX_CHANGES_KEPT: Duration = Duration::from_secs(7 * 86_400);

/// One periodic job.
pub struct Job {
    name: &'static str,
    every: Duration,
    pass: Box<dyn Fn(Timestamp) -> BoxFuture<'static, Result<u64, String>> + Send + Sync>,
}

impl Job {
    /// A job called `name` (the metrics' `task` label: `job` is the
    /// scrape's own) that runs `pass` at
    /// `every`; a pass gets the time it starts at and answers how many
    /// records it removed.
    pub fn new<F, Fut, E>(name: &'static str, every: Duration, pass: F) -> Job
    where
        F: Fn(Timestamp) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<u64, E>> + Send + 'static,
        E: Display,
    {
        Job {
            name,
            every,
            pass: Box::new(move |now| {
                let pass = pass(now);
                Box::pin(async move { pass.await.map_err(|error| error.to_string()) })
            }),
        }
    }
}

/// The jobs and their metrics.
pub struct Housekeeping {
    jobs: Vec<Job>,
    metrics: Metrics,
    /// The leases that make a job run once across replicas, and this
    /// replica's holder name; `None`: every tick runs.
    turns: Option<(crate::storage::LeaseTable, String)>,
}

/// How often a replica checks whether a job is due (at most).
const CHECK_EVERY: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct Metrics {
    removed: IntCounterVec,
    failures: IntCounterVec,
    last_success: GaugeVec,
}

impl Housekeeping {
    /// No jobs yet; the metrics registered in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let removed = IntCounterVec::new(
            Opts::new(
                "nudge_cp_housekeeping_removed_total",
                "Records housekeeping passes removed (or deactivated), by task",
            ),
            &["task"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "nudge_cp_housekeeping_failures_total",
                "Housekeeping passes that failed (retried at the next tick), by task",
            ),
            &["task"],
        )?;
        let last_success = GaugeVec::new(
            Opts::new(
                "nudge_cp_housekeeping_last_success_timestamp_seconds",
                "When the last successful housekeeping pass of the job ended (unix seconds)",
            ),
            &["task"],
        )?;
        registry.register(Box::new(removed.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(last_success.clone()))?;
        Ok(Housekeeping {
            jobs: Vec::new(),
            turns: None,
            metrics: Metrics {
                removed,
                failures,
                last_success,
            },
        })
    }

    /// Adds `job`.
    #[must_use]
    pub fn with(mut self, job: Job) -> Self {
        // Shown as 0 before the first pass ends, so the series exist.
        self.metrics.removed.with_label_values(&[job.name]);
        self.metrics.failures.with_label_values(&[job.name]);
        self.jobs.push(job);
        self
    }

    /// Runs each job once per interval across the replicas that share
    /// `leases`, `replica` being this one's holder name.
    #[must_use]
    pub fn shared(mut self, leases: crate::storage::LeaseTable, replica: &str) -> Self {
        self.turns = Some((leases, replica.to_owned()));
        self
    }

    /// Runs every job until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        let metrics = self.metrics;
        let turns = self.turns;
        futures::future::join_all(
            self.jobs
                .into_iter()
                .map(|job| run_job(job, metrics.clone(), turns.clone(), stop.clone())),
        )
        .await;
    }
}

async fn run_job(
    job: Job,
    metrics: Metrics,
    turns: Option<(crate::storage::LeaseTable, String)>,
    stop: CancellationToken,
) {
    let check = if turns.is_some() {
        job.every.min(CHECK_EVERY)
    } else {
        job.every
    };
    let mut interval = tokio::time::interval(check);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let lease = format!("job/housekeeping/{}", job.name);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        if let Some((leases, replica)) = &turns {
            match leases.take_due(&lease, replica, job.every).await {
                Ok(true) => {}
                // Not due, or another replica's turn.
                Ok(false) => continue,
                Err(error) => {
                    metrics.failures.with_label_values(&[job.name]).inc();
                    tracing::warn!(task = job.name, %error, "cannot tell whether the housekeeping job is due; asking again at the next check");
                    continue;
                }
            }
        }
        // Not raced with `stop` (see the module doc).
        match (job.pass)(Timestamp::now()).await {
            Ok(removed) => {
                metrics
                    .removed
                    .with_label_values(&[job.name])
                    .inc_by(removed);
                #[allow(clippy::cast_precision_loss)] // seconds fit an f64
                metrics
                    .last_success
                    .with_label_values(&[job.name])
                    .set(Timestamp::now().as_millisecond() as f64 / 1000.0);
                if removed > 0 {
                    tracing::info!(task = job.name, removed, "housekeeping pass done");
                } else {
                    tracing::debug!(task = job.name, "housekeeping pass done; nothing to remove");
                }
            }
            Err(error) => {
                metrics.failures.with_label_values(&[job.name]).inc();
                // Due again at once: the next check (of any replica) retries.
                if let Some((leases, replica)) = &turns {
                    let _ = leases.release(std::slice::from_ref(&lease), replica).await;
                }
                tracing::warn!(task = job.name, %error, retry_in = ?check, "housekeeping pass failed; retrying at the next check");
            }
        }
    }
}

/// The control plane's jobs (the table in the module doc) over `stores`.
pub fn standard(
    stores: &crate::storage::Stores,
    privacy: &crate::privacy::Privacy,
    metrics: &crate::metrics::Metrics,
    retention: crate::privacy::RetentionConfig,
    devices: crate::devices::cleanup::DeviceRetention,
    dedupe_window: Duration,
) -> Result<Housekeeping, prometheus::Error> {
    const HOURLY: Duration = Duration::from_secs(3600);
    // Device ages are weeks: four passes a day are plenty.
    const DEVICES_EVERY: Duration = Duration::from_secs(6 * 3600);
    let events = stores.events.clone();
    let gauges = metrics.clone();
    let dedupe = Job::new("dedupe", HOURLY, move |now| {
        let (events, gauges) = (events.clone(), gauges.clone());
        async move {
            let removed = events.prune_dedupe(cutoff(now, dedupe_window)).await?;
            gauges.set_store_sizes(events.event_count().await?, events.dedupe_count().await?);
            Ok::<_, crate::storage::StorageError>(removed)
        }
    });
    let privacy = privacy.clone();
    let retention = Job::new("retention", HOURLY, move |now| {
        let privacy = privacy.clone();
        async move {
            // Privacy blocks on its stores: off the async workers.
            let report =
                tokio::task::spawn_blocking(move || privacy.apply_retention(&retention, now))
                    .await
                    .map_err(|error| error.to_string())?
                    .map_err(|error| error.to_string())?;
            tracing::info!(?report, "retention pass done");
            let removed = u64::try_from(
                report.notifications
                    + report.deliveries
                    + report.inbox_items
                    + report.attempt_logs_trimmed,
            )
            .unwrap_or(u64::MAX);
            Ok::<_, String>(
                removed
                    .saturating_add(report.events)
                    .saturating_add(report.digest_folds),
            )
        }
    });
    let device_store = stores.devices.clone();
    let devices = Job::new("devices", DEVICES_EVERY, move |now| {
        let device_store = device_store.clone();
        async move {
            let report = device_store
                .cleanup(now, devices.stale_after, devices.delete_after)
                .await?;
            Ok::<_, crate::devices::DeviceError>(
                u64::try_from(report.deactivated + report.deleted).unwrap_or(u64::MAX),
            )
        }
    });
    let notifications = stores.notifications.clone();
    let idempotency_keys = Job::new("idempotency_keys", HOURLY, move |now| {
        let notifications = notifications.clone();
        async move { notifications.prune_idempotency_keys(now).await }
    });
    let notifications = stores.notifications.clone();
    let throttle_decisions = Job::new("throttle_decisions", HOURLY, move |now| {
        let notifications = notifications.clone();
        async move {
            let cutoff = cutoff(now, crate::throttle::MAX_WINDOW);
            notifications.prune_throttle_decisions(cutoff).await
        }
    });
    let inbox = stores.inbox.clone();
    let inbox_changes = Job::new("inbox_changes", HOURLY, move |now| {
        let inbox = inbox.clone();
        async move {
            let removed = inbox.prune_changes(now, INBOX_CHANGES_KEPT).await?;
            Ok::<_, crate::inbox::InboxError>(u64::try_from(removed).unwrap_or(u64::MAX))
        }
    });
    let pending = stores.pending.clone();
    let trigger_markers = Job::new("trigger_markers", HOURLY, move |now| {
        let pending = pending.clone();
        async move {
            let removed = pending.prune_finished(cutoff(now, dedupe_window)).await?;
            Ok::<_, crate::rules::PendingError>(u64::try_from(removed).unwrap_or(u64::MAX))
        }
    });
    let lease_table = stores.leases.clone();
    let leases = Job::new("leases", HOURLY, move |_now| {
        let lease_table = lease_table.clone();
        // An hour past expiry: nobody renews it any more.
        async move { lease_table.prune_expired(HOURLY).await }
    });
    let callback_table = stores.callback_ids.clone();
    let callback_ids = Job::new("callback_ids", HOURLY, move |now| {
        let callback_table = callback_table.clone();
        // An hour past expiry, for replicas' clocks that differ: the
        // timestamp check refuses those callbacks long before.
        async move { callback_table.prune(cutoff(now, HOURLY)).await }
    });
    let partition_events = stores.events.clone();
    let partitions = Job::new("partitions", HOURLY, move |now| {
        let events = partition_events.clone();
        // Makes partitions, removes nothing: old ones go with the
        // `dedupe` and `retention` passes.
        async move { events.ensure_partitions(now).await.map(|_made| 0) }
    });
    Ok(Housekeeping::new(metrics.registry())?
        .with(partitions)
        .with(dedupe)
        .with(retention)
        .with(devices)
        .with(idempotency_keys)
        .with(throttle_decisions)
        .with(inbox_changes)
        .with(trigger_markers)
        .with(leases)
        .with(callback_ids))
}

/// `now` minus `age`, clamped at the earliest time.
pub fn cutoff(now: Timestamp, age: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(age)
        .ok()
        .and_then(|age| now.checked_sub(age).ok())
        .unwrap_or(Timestamp::MIN)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    fn value(registry: &Registry, name: &str, job: &str) -> Option<f64> {
        registry
            .gather()
            .iter()
            .filter(|family| family.name() == name)
            .flat_map(|family| family.get_metric().iter())
            .find(|metric| metric.get_label().iter().any(|label| label.value() == job))
            .map(|metric| {
                if name.ends_with("_total") {
                    metric.get_counter().get_value()
                } else {
                    metric.get_gauge().get_value()
                }
            })
    }

    #[tokio::test]
    async fn jobs_run_at_start_and_a_failing_one_does_not_stop_the_others() {
        let registry = Registry::new();
        let passes = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&passes);
        let stop = CancellationToken::new();
        let housekeeping = Housekeeping::new(&registry)
            .unwrap()
            .with(Job::new("works", Duration::from_secs(3600), move |_| {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Ok::<u64, String>(3) }
            }))
            .with(Job::new("fails", Duration::from_secs(3600), |_| async {
                Err::<u64, _>("disk on fire")
            }));
        let running = tokio::spawn(housekeeping.run(stop.clone()));
        // Both run once at start-up; the next ticks are an hour away.
        for _ in 0..200 {
            if value(&registry, "nudge_cp_housekeeping_failures_total", "fails") == Some(1.0)
                && passes.load(Ordering::SeqCst) == 1
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        running.await.unwrap();

        assert_eq!(passes.load(Ordering::SeqCst), 1);
        assert_eq!(
            value(&registry, "nudge_cp_housekeeping_removed_total", "works"),
            Some(3.0)
        );
        assert_eq!(
            value(&registry, "nudge_cp_housekeeping_failures_total", "works"),
            Some(0.0)
        );
        assert_eq!(
            value(&registry, "nudge_cp_housekeeping_failures_total", "fails"),
            Some(1.0)
        );
        assert!(
            value(
                &registry,
                "nudge_cp_housekeeping_last_success_timestamp_seconds",
                "works"
            )
            .is_some_and(|at| at > 1.7e9)
        );
        assert_eq!(
            value(
                &registry,
                "nudge_cp_housekeeping_last_success_timestamp_seconds",
                "fails"
            ),
            None,
            "never succeeded"
        );
    }

    #[test]
    fn cutoff_clamps_at_the_earliest_time() {
        let now = Timestamp::from_second(1_000).unwrap();
        assert_eq!(
            cutoff(now, Duration::from_secs(400)),
            Timestamp::from_second(600).unwrap()
        );
        assert_eq!(cutoff(now, Duration::MAX), Timestamp::MIN);
    }
}
