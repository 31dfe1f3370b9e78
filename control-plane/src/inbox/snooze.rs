//! Snooze: a user hides an inbox item until a time, and it comes back.
//!
//! # Promises
//!
//! * **A snoozed item is out of sight**: listings leave it out unless they
//!   ask for snoozed items (`snoozed=true`), and it is not in the unread
//!   badge (it stays in `total`). Snoozing logs an `updated` change, so
//!   every open stream of the user drops it and takes the new counts.
//! * **It comes back as unread and unseen** when its time comes, or at
//!   once when the user cancels the snooze (`unsnooze`): the badge and the
//!   "new" dot bring it to the user's attention again, whether it had been
//!   read before or not. It keeps its place in the list (listings order
//!   by creation time); `sort=unread_first` shows it first. The return is
//!   an `updated` change like any other, so live streams follow.
//! * **The waker brings items back within about [`WAKE_EVERY`]** of their
//!   time, on every replica: each checks the due items through an index
//!   that holds snoozed items only, and wakes them with
//!   [`Action::WakeIfDue`], which is checked on the locked row. So two
//!   replicas waking the same item log one change, and an item snoozed
//!   again (later) after the waker found it stays hidden.
//! * **A snooze is for the future and bounded**: at least [`MIN_SNOOZE`]
//!   ahead and at most [`MAX_SNOOZE`]; anything else is refused with a
//!   message that says why, and changes nothing.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use prometheus::{IntCounter, Registry};
use tokio_util::sync::CancellationToken;

use super::{Action, InboxError, InboxStore};

/// How often each replica looks for snoozes that are due.
pub const WAKE_EVERY: Duration = Duration::from_secs(1);

/// The shortest snooze: a time closer than this is most likely a clock
/// error or a past time, and would come back before the user saw it go.
pub const MIN_SNOOZE: SignedDuration = SignedDuration::from_secs(1);

/// The longest snooze: a year (and a day, for "the same day next year").
pub const MAX_SNOOZE: SignedDuration = SignedDuration::from_hours(366 * 24);

/// Items one query of the waker takes; a pass reads pages until none are
/// due, at most [`PAGES_PER_PASS`] of them (the rest wait for the next
/// tick, so one pass never holds the writer for long).
const PAGE: usize = 500;
const PAGES_PER_PASS: usize = 20;

/// Refuses a snooze time that is not between [`MIN_SNOOZE`] and
/// [`MAX_SNOOZE`] from `now`.
pub fn check_until(until: Timestamp, now: Timestamp) -> Result<(), InboxError> {
    let ahead = until.duration_since(now);
    if ahead < MIN_SNOOZE {
        return Err(InboxError::Invalid(format!(
            "until: {until} is not in the future (now is {now})"
        )));
    }
    if ahead > MAX_SNOOZE {
        return Err(InboxError::Invalid(format!(
            "until: {until} is more than 366 days ahead"
        )));
    }
    Ok(())
}

/// Brings back every item whose snooze is due at `now` (up to
/// `PAGES_PER_PASS` pages); returns how many came back.
pub async fn wake_due(inbox: &InboxStore, now: Timestamp) -> Result<usize, InboxError> {
    let mut woken = 0;
    for _ in 0..PAGES_PER_PASS {
        let mut due = inbox.due_snoozes(now, PAGE).await?;
        let full = due.len() == PAGE;
        // One transaction per user (their items are one key range and one
        // counts row); a user's items are adjacent after sorting.
        due.sort_unstable();
        for run in due.chunk_by(|a, b| a.0 == b.0) {
            let user_id = &run[0].0;
            let ids: Vec<String> = run.iter().map(|(_, id)| id.clone()).collect();
            let applied = inbox.apply(user_id, &ids, Action::WakeIfDue, now).await?;
            woken += applied.changed.len();
        }
        if !full {
            break;
        }
    }
    Ok(woken)
}

/// Wakes due snoozes every [`WAKE_EVERY`] until `stop`. A failed pass is
/// logged and retried at the next tick.
pub struct Waker {
    inbox: InboxStore,
    woken: IntCounter,
}

impl Waker {
    pub fn new(inbox: InboxStore, registry: &Registry) -> Result<Self, prometheus::Error> {
        let woken = IntCounter::new(
            "nudge_cp_inbox_snoozes_woken_total",
            "Snoozed inbox items brought back by this replica when their time came",
        )?;
        registry.register(Box::new(woken.clone()))?;
        Ok(Waker { inbox, woken })
    }

    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(WAKE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match wake_due(&self.inbox, Timestamp::now()).await {
                Ok(woken) => self.woken.inc_by(u64::try_from(woken).unwrap_or(u64::MAX)),
                Err(error) => tracing::warn!(%error, "waking snoozed inbox items failed"),
            }
        }
    }
}
