//! The rollup worker: [`Analytics::step`] folds what arrived since the
//! last pass, [`Analytics::run`] keeps doing so, and
//! [`Analytics::erase_user`] forgets a user.
//!
//! A pass drains up to [`FACT_PAGE`] delivery facts first, then folds up
//! to [`EVENT_PAGE`] events: facts first, so an open or click recorded
//! before an outcome event arrived is the touch that outcome finds. The
//! pass commits its counters and cursor and removes the facts it counted
//! from their table in one transaction (see [`Overlay::commit`]), so a
//! fact is counted exactly once whatever stops the process. Before folding,
//! it reads what the fold will read in batches ([`Overlay::prefetch`]).
//!
//! With `[analytics] enabled = false` the worker folds no events (the
//! cursor stays, so switching it on later catches up from the events
//! still retained) and discards delivery facts, so their log stays small;
//! delivery figures of that time are not counted.

use std::time::Duration;

use jiff::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::storage::Singleton;

use super::activity::{self, Context, close_session};
use super::actor::ActorState;
use super::keys::{key, parts, user_actor};
use super::layout::{self, CURSOR};
use super::metrics::PendingMetrics;
use super::overlay::Overlay;
use super::{Analytics, AnalyticsError, delivery};
use crate::event::Cursor;
use crate::storage::{RollupTable, block_on};

/// Where [`Analytics::step_interrupted`] stops a pass, as a crash there
/// would: before its commit (nothing written). After the commit there is
/// nothing left to interrupt: counters, cursor and the removal of the
/// counted facts are one transaction.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    Never,
    BeforeCommit,
}

/// Events folded per pass. Large, because a pass writes each key it
/// touched once: the more events share a pass, the fewer writes per
/// event for shared counters (a busy product's day, week and month) and
/// for actors with several events. A pass of this size takes about a
/// second when catching up; erase waits for it.
pub const EVENT_PAGE: usize = 10_000;
/// Delivery facts folded per pass.
pub const FACT_PAGE: usize = 2000;
/// How often the worker looks for new data when caught up.
const POLL: Duration = Duration::from_millis(250);
/// The pause after a pass that found less than a full page of facts:
/// while data trickles in, what arrives meanwhile is folded by the next
/// pass together, instead of passes running back to back on a few facts
/// each. Every pass is one write transaction; back to back they took a
/// third of SQLite's writer under 3k notifications/s (`nudge-bench
/// --only notify`: ~43 commits/s).
const LINGER: Duration = Duration::from_millis(100);
/// How often a replica that does not hold the analytics lease asks again.
const STANDBY_POLL: Duration = Duration::from_secs(1);
/// How often open sessions are checked for inactivity.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Open sessions a sweep looks at (and ends) per transaction.
const SWEEP_BATCH: usize = 5000;
/// How many times erase tries its commit while other processes' passes
/// commit first.
const ERASE_ATTEMPTS: usize = 10;
/// Pause after a failed pass before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

impl Analytics {
    /// One pass (see the module doc). Returns how many facts and events
    /// it applied: 0 when caught up.
    pub fn step(&self) -> Result<usize, AnalyticsError> {
        self.pass(Interrupt::Never)
    }

    /// A pass cut short as a crash would cut it, for tests of the
    /// exactly-once promise: see [`Interrupt`].
    #[doc(hidden)]
    pub fn step_interrupted(&self, at: Interrupt) -> Result<usize, AnalyticsError> {
        self.pass(at)
    }

    fn pass(&self, interrupt: Interrupt) -> Result<usize, AnalyticsError> {
        let inner = &self.inner;
        let _writer = inner
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut overlay = Overlay::begin(&inner.rollups)?;
        let pending_metrics = PendingMetrics::default();
        let context = Context {
            config: &inner.config,
            metrics: &pending_metrics,
        };
        let facts = block_on(inner.deliveries.facts(FACT_PAGE))?;
        let mut position = read_cursor(&overlay)?;
        let page = match inner.config.enabled {
            true => Some(block_on(inner.store.events_after(position, EVENT_PAGE))?),
            false => None,
        };
        let events = page.as_ref().map_or(&[][..], |page| &page.events[..]);
        if inner.config.enabled {
            // The same fold as below, on scratch, to read what it reads
            // in batches (see `overlay`); its metrics are dropped.
            let scratch_metrics = PendingMetrics::default();
            let scratch = Context {
                config: &inner.config,
                metrics: &scratch_metrics,
            };
            overlay.prefetch(|scout| {
                for fact in facts.iter().filter_map(|(_, fact)| fact.as_ref().ok()) {
                    delivery::fold(scout, &scratch, fact)?;
                }
                for event in events {
                    activity::fold(scout, &scratch, event)?;
                }
                Ok(())
            })?;
        }
        let mut drained = Vec::new();
        let mut facts_applied = 0;
        for (seq, fact) in facts {
            drained.push(seq);
            if !inner.config.enabled {
                continue;
            }
            match fact {
                Ok(fact) => {
                    delivery::fold(&mut overlay, &context, &fact)?;
                    facts_applied += 1;
                }
                // A fact this version cannot read would block the log
                // forever: it is dropped, loudly.
                Err(error) => tracing::error!(%error, "dropping an unreadable delivery fact"),
            }
        }
        for event in events {
            activity::fold(&mut overlay, &context, event)?;
        }
        let events_applied = events.len();
        if let Some(next) = page.as_ref().and_then(|page| page.next) {
            overlay.put(CURSOR.to_vec(), next.0.to_be_bytes().to_vec());
            position = Some(next);
        }
        if interrupt == Interrupt::BeforeCommit {
            return Ok(0);
        }
        if !overlay.is_empty() || !drained.is_empty() {
            overlay.commit(&drained)?;
        }
        pending_metrics.apply(&inner.metrics);
        let applied = &inner.metrics.applied;
        applied
            .with_label_values(&["events"])
            .inc_by(events_applied as u64);
        applied
            .with_label_values(&["delivery_facts"])
            .inc_by(facts_applied as u64);
        let newest = block_on(inner.store.last_cursor())?.map_or(0, |cursor| cursor.0);
        let done = position.map_or(0, |cursor| cursor.0);
        let behind = if inner.config.enabled {
            newest.saturating_sub(done)
        } else {
            0
        };
        inner
            .metrics
            .backlog
            .set(i64::try_from(behind).unwrap_or(i64::MAX));
        Ok(drained.len() + events_applied)
    }

    /// Ends the open sessions that have seen nothing for the session
    /// timeout as of `now` (by inactivity, at their last event), so
    /// session figures do not wait for the actor's next event. Returns
    /// how many it ended.
    pub fn sweep_sessions(&self, now: Timestamp) -> Result<usize, AnalyticsError> {
        let inner = &self.inner;
        let _writer = inner
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let timeout = super::config::span(inner.config.session_timeout);
        let open: Vec<String> = block_on(inner.rollups.scan_prefix(&key("as", &[])))?
            .into_iter()
            .filter_map(|(mark, _)| parts(&mark).pop())
            .collect();
        let mut ended = 0;
        // Many sessions can go stale at once (after a quiet night): they
        // are looked at and committed in batches, so one sweep never
        // builds an unbounded transaction or holds every record at once.
        for batch in open.chunks(SWEEP_BATCH) {
            let mut overlay = Overlay::begin(&inner.rollups)?;
            overlay.load(batch.iter().map(|actor| layout::actor_key(actor)).collect())?;
            for actor in batch {
                let Some(bytes) = overlay.get(&layout::actor_key(actor))? else {
                    continue;
                };
                let stale = ActorState::decode(&bytes)?
                    .detail
                    .open_session
                    .is_some_and(|open| now.duration_since(open.last) > timeout);
                if !stale {
                    continue;
                }
                let Some(mut state) = overlay.take_actor(actor)? else {
                    continue;
                };
                if let Some(open) = state.detail.open_session.take() {
                    let end = open.last;
                    close_session(&mut overlay, actor, open, end, "inactivity")?;
                    ended += 1;
                }
                overlay.put_actor(actor, state)?;
            }
            if !overlay.is_empty() {
                overlay.commit(&[])?;
            }
        }
        Ok(ended)
    }

    /// Keeps the rollups up to date until `shutdown`: passes back to back
    /// while there is a backlog, a poll every [`POLL`] when caught up,
    /// a session sweep every [`SWEEP_EVERY`]. A failed pass is logged and
    /// retried (it changed nothing). With `turn`, only while this replica
    /// holds that lease: one replica folds, the others stand by (passes of
    /// two would conflict and redo each other's work).
    pub async fn run(self, shutdown: CancellationToken, turn: Option<Singleton>) {
        let mut last_sweep = tokio::time::Instant::now();
        loop {
            if let Some(turn) = &turn {
                let mine = match turn.hold().await {
                    Ok(mine) => mine,
                    Err(error) => {
                        tracing::warn!(%error, "cannot renew the analytics lease; standing by");
                        false
                    }
                };
                if !mine {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(STANDBY_POLL) => continue,
                    }
                }
            }
            let this = self.clone();
            let outcome = tokio::task::spawn_blocking(move || this.step()).await;
            let pause = match outcome {
                Ok(Ok(0)) => POLL,
                Ok(Ok(applied)) if applied < FACT_PAGE => LINGER,
                Ok(Ok(_)) => Duration::ZERO,
                // Another worker's pass came first: nothing to report.
                Ok(Err(AnalyticsError::Conflict)) => POLL,
                Ok(Err(error)) => {
                    tracing::error!(%error, "analytics pass failed; retrying");
                    RETRY_AFTER
                }
                Err(error) => {
                    tracing::error!(%error, "analytics pass panicked; retrying");
                    RETRY_AFTER
                }
            };
            if last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = tokio::time::Instant::now();
                let this = self.clone();
                let now = self.inner.clock.now();
                match tokio::task::spawn_blocking(move || this.sweep_sessions(now)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => tracing::error!(%error, "session sweep failed"),
                    Err(error) => tracing::error!(%error, "session sweep panicked"),
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(pause) => {}
            }
        }
        if let Some(turn) = turn
            && let Err(error) = turn.release().await
        {
            tracing::warn!(%error, "could not give the analytics lease up; it expires by itself");
        }
    }

    /// Forgets `user_id` (privacy erase): their engagement, sessions,
    /// events by name, funnel progress, touches, per-user delivery
    /// figures and identity links. Aggregate counts (how many events,
    /// users, deliveries a day had) stay: they say nothing about the user.
    /// Returns how many records it removed.
    pub fn erase_user(&self, user_id: &str) -> Result<usize, AnalyticsError> {
        let inner = &self.inner;
        let _writer = inner
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let actor = user_actor(user_id);
        // Retried while other writers (another process) commit first.
        let mut attempts = 0;
        let mut removed = loop {
            attempts += 1;
            match erase_rollups(&inner.rollups, &actor) {
                Err(AnalyticsError::Conflict) if attempts < ERASE_ATTEMPTS => continue,
                outcome => break outcome?,
            }
        };
        // Facts about the user not folded yet would bring per-user
        // figures back: they go too. (The writer lock keeps a pass from
        // reading them in between.)
        let unfolded = block_on(inner.deliveries.delete_facts_of_user(user_id))?;
        removed += usize::try_from(unfolded).unwrap_or(usize::MAX);
        Ok(removed)
    }
}

/// Removes `actor`'s records in one commit; returns how many.
fn erase_rollups(table: &RollupTable, actor: &str) -> Result<usize, AnalyticsError> {
    let mut overlay = Overlay::begin(table)?;
    let mut removed = 0;
    for alias in overlay.keys_with_prefix(&key("aal", &[actor]))? {
        if let Some(anonymous) = parts(&alias).pop() {
            overlay.remove(key("id", &[&anonymous]));
        }
    }
    for family in layout::ACTOR_FAMILIES {
        for record in overlay.keys_with_prefix(&key(family, &[actor]))? {
            overlay.remove(record);
            removed += 1;
        }
    }
    if overlay.remove_actor(actor)? {
        removed += 1;
    }
    overlay.commit(&[])?;
    Ok(removed)
}

fn read_cursor(overlay: &Overlay<'_>) -> Result<Option<Cursor>, AnalyticsError> {
    Ok(overlay.get(CURSOR)?.and_then(|bytes| {
        let bytes: [u8; 8] = bytes.as_slice().try_into().ok()?;
        Some(Cursor(u64::from_be_bytes(bytes)))
    }))
}

impl Analytics {
    /// Everything the rollups hold about `user_id`, as the reports show
    /// it (all time): `users`, `user_events`, `sessions`, `delivery`.
    pub fn export_user(&self, user_id: &str) -> Result<serde_json::Value, AnalyticsError> {
        use super::{Granularity, ReportName, ReportQuery};
        let mut export = serde_json::Map::new();
        for name in [
            ReportName::Users,
            ReportName::UserEvents,
            ReportName::Sessions,
            ReportName::Delivery,
        ] {
            let report = self.report(&ReportQuery {
                report: Some(name),
                user: Some(user_id.to_owned()),
                from: Some(jiff::civil::date(1970, 1, 1)),
                granularity: (name == ReportName::Delivery).then_some(Granularity::Day),
                limit: Some(super::MAX_LIMIT),
                ..ReportQuery::default()
            })?;
            export.insert(name.as_str().to_owned(), report.to_json()["rows"].take());
        }
        Ok(serde_json::Value::Object(export))
    }
}
