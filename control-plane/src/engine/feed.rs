//! The engine's share of the event feed when several control planes run on
//! one database.
//!
//! The feed is split into [`FEED_PARTITIONS`] partitions by user
//! ([`FeedPartition::of`], stored with each event). Each partition is a
//! lease (`feed/NN`, see `storage::leases`) with a cursor of the same name;
//! a replica plans the events of the partitions it holds, in feed order.
//! Each replica also renews a heartbeat lease (`replica/ID`), and one of
//! them holds `job/engine-timers`, which fires due delayed triggers and
//! digests.
//!
//! # Promises
//!
//! * **Each event is planned by the replica that holds its partition**, so
//!   across N replicas the work is shared, and one user's events (one
//!   partition) are planned in order. Planning is idempotent (see the
//!   engine's promises), which is what makes a handover safe: a replica
//!   that loses a partition mid-page may plan a few events the next holder
//!   plans again, and that creates nothing twice.
//! * **A fair share, rebalanced within seconds.** Every
//!   [`FeedSettings::lease_ttl`] / 4 a task of its own ([`Feed::renew_until`],
//!   so a long page never lets the leases lapse) renews the leases, counts
//!   the live replicas (unexpired heartbeats) and aims at ⌈partitions /
//!   replicas⌉: it gives up partitions above that and takes unowned or
//!   expired ones below it. A replica that dies stops renewing; its
//!   partitions are taken within one TTL plus one refresh. A partition
//!   given up or lost mid-page is dropped when the page's cursor move finds
//!   it no longer held; what the page planned of it is planned again by
//!   the next holder (idempotently).
//! * **A cursor moves only under its lease** (see
//!   `storage::cursors::advance_held`): a partition that was lost is
//!   dropped at once, and its new holder's progress is never undone.
//! * On SQLite (one process) the only replica holds every partition, and
//!   the feed is read with no partition filter, as before partitions.
//! * **A clean stop hands over at once**: [`Feed::release_all`] gives every
//!   lease up, so a rolling upgrade does not wait for TTLs.
//! * Metrics: `nudge_cp_leases_held{kind}` (this replica's
//!   `feed_partition` and `job` leases), `nudge_cp_feed_partitions_unowned`
//!   (partitions no live replica holds, as this replica last saw), and
//!   `nudge_cp_engine_feed_lag_seconds{partition}` (age of the oldest event
//!   not yet planned in a partition held here; 0 when caught up).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use prometheus::{GaugeVec, IntGauge, IntGaugeVec, Opts, Registry};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::event::{Cursor, FEED_PARTITIONS, FeedPartition};
use crate::storage::{CursorTable, LeaseTable, StorageError};

/// The cursor every partition starts from when it has none of its own: the
/// whole feed's cursor of builds before partitions.
const LEGACY_CURSOR: &str = "events";
/// The lease of the replica that fires due delayed triggers and digests.
const TIMERS_LEASE: &str = "job/engine-timers";

/// Who this replica is, and how long its leases last.
#[derive(Debug, Clone)]
pub struct FeedSettings {
    /// This process's holder name in `leases`: unique per process start.
    pub replica: String,
    /// How long a lease lasts without renewal: how long a dead replica's
    /// partitions wait before another takes them.
    pub lease_ttl: Duration,
}

impl FeedSettings {
    /// A replica named after `host` (the pod name on Kubernetes) plus a
    /// random suffix, so a restarted process never mistakes its
    /// predecessor's leases for its own.
    pub fn new(host: &str, lease_ttl: Duration) -> Self {
        FeedSettings {
            replica: format!("{host}-{:08x}", rand::random::<u32>()),
            lease_ttl,
        }
    }
}

/// What to read next: the partitions held and where each one is.
#[derive(Debug, Clone)]
pub struct Share {
    held: Vec<FeedPartition>,
    cursors: BTreeMap<FeedPartition, Option<Cursor>>,
}

impl Share {
    /// The partitions to read, `None` for all of them (no filter needed).
    pub fn filter(&self) -> Option<&[FeedPartition]> {
        (self.held.len() < usize::from(FEED_PARTITIONS)).then_some(self.held.as_slice())
    }

    /// Where the page starts: the least advanced held partition.
    pub fn after(&self) -> Option<Cursor> {
        self.cursors.values().min().copied().flatten()
    }

    /// Whether the event at `position` in `partition` is still to plan
    /// (the page starts at the least advanced partition; others skip what
    /// they did already).
    pub fn wants(&self, partition: FeedPartition, position: Cursor) -> bool {
        match self.cursors.get(&partition) {
            Some(cursor) => cursor.is_none_or(|cursor| position > cursor),
            None => false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// This replica's leases. Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct Feed {
    leases: LeaseTable,
    cursors: CursorTable,
    settings: FeedSettings,
    state: Arc<Mutex<State>>,
    metrics: FeedMetrics,
}

#[derive(Default)]
struct State {
    held: BTreeSet<FeedPartition>,
    timers: bool,
    refreshed: Option<Instant>,
}

#[derive(Clone)]
struct FeedMetrics {
    leases_held: IntGaugeVec,
    unowned: IntGauge,
    lag: GaugeVec,
}

impl FeedMetrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let leases_held = IntGaugeVec::new(
            Opts::new(
                "nudge_cp_leases_held",
                "Leases this replica holds, by kind (feed_partition: event-feed partitions it plans; job: the engine timers' lease, 1 on the replica that fires delayed triggers and digests)",
            ),
            &["kind"],
        )?;
        let unowned = IntGauge::new(
            "nudge_cp_feed_partitions_unowned",
            "Event-feed partitions that no live replica holds, as this replica last saw (their events wait)",
        )?;
        let lag = GaugeVec::new(
            Opts::new(
                "nudge_cp_engine_feed_lag_seconds",
                "Age of the oldest event not yet planned in a feed partition this replica holds (0 when caught up)",
            ),
            &["partition"],
        )?;
        registry.register(Box::new(leases_held.clone()))?;
        registry.register(Box::new(unowned.clone()))?;
        registry.register(Box::new(lag.clone()))?;
        Ok(FeedMetrics {
            leases_held,
            unowned,
            lag,
        })
    }
}

fn lease_name(partition: FeedPartition) -> String {
    format!("feed/{partition}")
}

fn partition_of_lease(name: &str) -> Option<FeedPartition> {
    let number: u16 = name.strip_prefix("feed/")?.parse().ok()?;
    (number < FEED_PARTITIONS).then_some(FeedPartition(number))
}

impl Feed {
    pub fn new(
        leases: LeaseTable,
        cursors: CursorTable,
        settings: FeedSettings,
        registry: &Registry,
    ) -> Result<Self, prometheus::Error> {
        Ok(Feed {
            leases,
            cursors,
            settings,
            state: Arc::new(Mutex::new(State::default())),
            metrics: FeedMetrics::new(registry)?,
        })
    }

    /// This replica's holder name.
    pub fn replica(&self) -> &str {
        &self.settings.replica
    }

    /// The partitions to plan now and their cursors, renewing and
    /// rebalancing the leases first when a refresh is due.
    pub async fn share(&self) -> Result<Share, StorageError> {
        let mut state = self.state.lock().await;
        let due = state
            .refreshed
            .is_none_or(|at| at.elapsed() >= self.settings.lease_ttl / 4);
        if due {
            self.refresh(&mut state).await?;
        }
        let held: Vec<FeedPartition> = state.held.iter().copied().collect();
        drop(state);
        let names: Vec<String> = held.iter().copied().map(lease_name).collect();
        let stored = self.cursors.load_many(&names).await?;
        let legacy = if stored.len() < names.len() {
            self.cursors.load(LEGACY_CURSOR).await?
        } else {
            None
        };
        let cursors = held
            .iter()
            .map(|partition| {
                let cursor = stored.get(&lease_name(*partition)).copied().or(legacy);
                (*partition, cursor)
            })
            .collect();
        Ok(Share { held, cursors })
    }

    /// Renews and rebalances the leases every TTL / 4 until `stop` (the
    /// engine's own passes never wait for it). A failed renewal is logged
    /// and tried again at the next tick; leases it could not renew expire.
    pub async fn renew_until(self, stop: tokio_util::sync::CancellationToken) {
        let every = self.settings.lease_ttl / 4;
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = stop.cancelled() => return,
            }
            let mut state = self.state.lock().await;
            if let Err(error) = self.refresh(&mut state).await {
                tracing::warn!(replica = %self.settings.replica, %error, "cannot renew the feed leases; retrying");
            }
        }
    }

    /// Whether this replica fires due delayed triggers and digests (it held
    /// the timers' lease at the last refresh).
    pub async fn runs_timers(&self) -> Result<bool, StorageError> {
        let mut state = self.state.lock().await;
        if state.refreshed.is_none() {
            self.refresh(&mut state).await?;
        }
        Ok(state.timers)
    }

    /// Records that the events of `share` up to `position` were planned;
    /// partitions whose lease was lost meanwhile are dropped. `oldest` is
    /// the ingest time of the first event still to plan per partition
    /// (absent: caught up), for the lag metric.
    pub async fn advance(
        &self,
        share: &Share,
        position: Cursor,
        oldest: &BTreeMap<FeedPartition, Timestamp>,
    ) -> Result<(), StorageError> {
        let names: Vec<String> = share.held.iter().copied().map(lease_name).collect();
        let still: BTreeSet<FeedPartition> = self
            .cursors
            .advance_held(&names, position, &self.settings.replica)
            .await?
            .iter()
            .filter_map(|name| partition_of_lease(name))
            .collect();
        let now = Timestamp::now();
        for partition in &share.held {
            let label = partition.to_string();
            let lag = oldest
                .get(partition)
                .map_or(0.0, |at| now.duration_since(*at).as_secs_f64().max(0.0));
            self.metrics.lag.with_label_values(&[&label]).set(lag);
        }
        let lost: Vec<FeedPartition> = share
            .held
            .iter()
            .copied()
            .filter(|partition| !still.contains(partition))
            .collect();
        if !lost.is_empty() {
            tracing::warn!(
                replica = %self.settings.replica,
                partitions = ?lost,
                "feed partitions lost to another replica; dropping them"
            );
            let mut state = self.state.lock().await;
            for partition in &lost {
                state.held.remove(partition);
                let _ = self
                    .metrics
                    .lag
                    .remove_label_values(&[&partition.to_string()]);
            }
            self.set_held_gauges(&state);
        }
        Ok(())
    }

    /// Every held partition is caught up (the feed had nothing more).
    pub fn caught_up(&self, share: &Share) {
        for partition in &share.held {
            self.metrics
                .lag
                .with_label_values(&[&partition.to_string()])
                .set(0.0);
        }
    }

    /// Gives every lease up (clean shutdown): other replicas take the
    /// partitions at their next refresh instead of after the TTL.
    pub async fn release_all(&self) -> Result<(), StorageError> {
        let mut state = self.state.lock().await;
        let mut names: Vec<String> = state.held.iter().copied().map(lease_name).collect();
        names.push(TIMERS_LEASE.to_owned());
        names.push(self.heartbeat());
        self.leases.release(&names, &self.settings.replica).await?;
        state.held.clear();
        state.timers = false;
        self.set_held_gauges(&state);
        Ok(())
    }

    fn heartbeat(&self) -> String {
        format!("replica/{}", self.settings.replica)
    }

    fn set_held_gauges(&self, state: &State) {
        self.metrics
            .leases_held
            .with_label_values(&["feed_partition"])
            .set(i64::try_from(state.held.len()).unwrap_or(i64::MAX));
        self.metrics
            .leases_held
            .with_label_values(&["job"])
            .set(i64::from(state.timers));
    }

    /// Renews the heartbeat, the timers' lease if held (or free) and the
    /// held partitions; gives up partitions above the fair share and takes
    /// unowned ones below it.
    async fn refresh(&self, state: &mut State) -> Result<(), StorageError> {
        let me = self.settings.replica.as_str();
        let ttl = self.settings.lease_ttl;
        // The heartbeat and the timers first: both are cheap, and the
        // heartbeat must be live before this replica counts itself.
        let singles = self
            .leases
            .hold(&[self.heartbeat(), TIMERS_LEASE.to_owned()], me, ttl)
            .await?;
        state.timers = singles.iter().any(|name| name == TIMERS_LEASE);

        let replicas = self.leases.live("replica/").await?.len().max(1);
        let fair = usize::from(FEED_PARTITIONS).div_ceil(replicas);
        let owners: BTreeMap<FeedPartition, String> = self
            .leases
            .live("feed/")
            .await?
            .into_iter()
            .filter_map(|(name, holder)| Some((partition_of_lease(&name)?, holder)))
            .collect();
        let mut mine: Vec<FeedPartition> = owners
            .iter()
            .filter(|(_, holder)| holder.as_str() == me)
            .map(|(partition, _)| *partition)
            .collect();
        // Above the fair share: give the highest ones up.
        let surplus: Vec<FeedPartition> = if mine.len() > fair {
            mine.split_off(fair)
        } else {
            Vec::new()
        };
        if !surplus.is_empty() {
            let names: Vec<String> = surplus.iter().copied().map(lease_name).collect();
            self.leases.release(&names, me).await?;
            tracing::info!(
                replica = me,
                released = surplus.len(),
                fair,
                "feed partitions handed over"
            );
        }
        let mut names: Vec<String> = mine.iter().copied().map(lease_name).collect();
        // Below it: the unowned ones, lowest first.
        let free: Vec<FeedPartition> = FeedPartition::all()
            .filter(|partition| !owners.contains_key(partition))
            .take(fair.saturating_sub(mine.len()))
            .collect();
        names.extend(free.iter().copied().map(lease_name));
        let held: BTreeSet<FeedPartition> = self
            .leases
            .hold(&names, me, ttl)
            .await?
            .iter()
            .filter_map(|name| partition_of_lease(name))
            .collect();
        let taken = held.difference(&state.held).count();
        if taken > 0 {
            tracing::info!(
                replica = me,
                taken,
                held = held.len(),
                fair,
                "feed partitions taken"
            );
        }
        // Held before, neither kept nor given up: another replica took them
        // (this one stalled past the TTL).
        let lost: Vec<FeedPartition> = state
            .held
            .iter()
            .filter(|partition| !held.contains(partition) && !surplus.contains(partition))
            .copied()
            .collect();
        if !lost.is_empty() {
            tracing::warn!(replica = me, partitions = ?lost, "feed partitions lost to another replica");
        }
        for partition in lost.iter().chain(&surplus) {
            let _ = self
                .metrics
                .lag
                .remove_label_values(&[&partition.to_string()]);
        }
        let owned_elsewhere = owners
            .values()
            .filter(|holder| holder.as_str() != me)
            .count();
        let unowned = usize::from(FEED_PARTITIONS).saturating_sub(owned_elsewhere + held.len());
        self.metrics
            .unowned
            .set(i64::try_from(unowned).unwrap_or(i64::MAX));
        state.held = held;
        state.refreshed = Some(Instant::now());
        self.set_held_gauges(state);
        Ok(())
    }
}
