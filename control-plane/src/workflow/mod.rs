//! Workflows: a notification type that goes out in **steps** instead of on
//! a flat list of channels. Send in-app; wait; then email only if nobody
//! read the in-app item; wait until 09:00 in the user's zone; then SMS.
//!
//! ```toml
//! [types.payment_failed]
//! critical = true
//! [[types.payment_failed.steps]]
//! channel = "in_app"
//! [[types.payment_failed.steps]]
//! wait = "1h"                  # 1s to 31d
//! [[types.payment_failed.steps]]
//! channel = "email"            # skipped if the in-app item was read or clicked
//! [[types.payment_failed.steps]]
//! wait_until = "09:00"         # the next 09:00 in the user's zone
//! [[types.payment_failed.steps]]
//! channel = "sms"
//! unless = ["opened"]          # also skipped if the email was opened
//! min_priority = "high"        # only for notifies of priority high
//! ```
//!
//! # Promises
//!
//! * **Planned at once, decided when due.** When the notification is
//!   planned, every channel step becomes a delivery due at its step's time
//!   ([`schedule`]): the waits before it add up from the notification's
//!   creation, a `wait_until` moves to the next such wall time in the
//!   user's zone (their preferences' zone, else the `timezone` trait, else
//!   UTC; DST gaps resolve forward). The user's preferences apply to each
//!   step at its own time: an opted-out channel is skipped, quiet hours
//!   hold a step until they end, a digest preference folds it into the
//!   digest (which then goes out whatever was read).
//! * **A read or click cancels the remaining steps.** Every step after the
//!   first wait carries a [`StepGate`]; when its delivery comes due, the
//!   dispatcher asks [`gate`] (through [`crate::send_check`]) whether any of the notification's deliveries
//!   was read (the in-app item read or archived in the inbox) or clicked,
//!   or whatever else the step's `unless` names (`opened`: an email's
//!   open pixel, a provider's open report). If so, the delivery ends
//!   `cancelled` and is never sent. `always = true` sends a step whatever
//!   happened (a receipt). Steps before the first wait go out together, as
//!   a flat channel list would.
//! * **Every step's decision is in its delivery's attempt log**: `skipped`
//!   with what cancelled it, or `proceeded` with what was checked, before
//!   the provider's answer. A step left out when planned (the user switched
//!   the channel off, has no phone number, the notify's priority is below
//!   `min_priority`) has no delivery; the engine logs why.
//! * The decision is taken when the step is due, on whichever replica
//!   claims it, from the stored state: a read a moment before counts, and
//!   no in-memory timer is lost with a replica.
//! * Each channel appears in at most one step (a delivery's id is derived
//!   from its notification and channel); a type has `steps` or
//!   `channels`, not both; at most [`MAX_STEPS`] steps spanning at most
//!   [`MAX_SPAN`].

pub mod gate;

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::channels::ChannelKind;
use crate::delivery::{Engagement, StepGate};
use crate::event::Priority;

/// The most steps a type may have.
pub const MAX_STEPS: usize = 16;
/// The longest a workflow may last: the sum of its waits, counting each
/// `wait_until` as a day.
pub const MAX_SPAN: Duration = Duration::from_secs(31 * 86_400);

/// One step of a type's workflow, as the operator writes it (config file,
/// management API): exactly one of `channel`, `wait` and `wait_until`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Step {
    /// Send on this channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelKind>,
    /// Wait this long (`"30m"`, `"1h"`, `"2d"`: 1 s to 31 d).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<String>,
    /// Wait until the next such wall time (`"HH:MM"`) in the user's zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_until: Option<String>,
    /// Engagement, besides a read or a click, that cancels this step
    /// (channel steps only): `opened`.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub unless: BTreeSet<Engagement>,
    /// Sent whatever the user did (channel steps only; not with `unless`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub always: bool,
    /// Only for notifies of at least this priority (channel steps only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_priority: Option<Priority>,
}

/// What is wrong with a type's steps: the field relative to the type
/// (`steps[2].wait`) and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepsError {
    pub field: String,
    pub message: String,
}

impl Step {
    /// How long this step waits, when it is a `wait`.
    fn wait_for(&self) -> Result<Option<Duration>, String> {
        let Some(text) = &self.wait else {
            return Ok(None);
        };
        let wait = humantime::parse_duration(text)
            .map_err(|error| format!("{text:?} is not a duration: {error}"))?;
        if wait < Duration::from_secs(1) || wait > MAX_SPAN {
            return Err(format!("{text:?} is not between 1s and 31d"));
        }
        Ok(Some(wait))
    }

    /// The wall time this step waits for, when it is a `wait_until`.
    fn wait_until_time(&self) -> Result<Option<jiff::civil::Time>, String> {
        let Some(text) = &self.wait_until else {
            return Ok(None);
        };
        crate::preferences::hhmm(text)
            .map(Some)
            .ok_or_else(|| format!("{text:?} is not a time of day written HH:MM (00:00 to 23:59)"))
    }
}

/// Checks a type's steps: each step one kind, durations and times that
/// parse, channel options only on channel steps, each channel at most
/// once and at least one, within [`MAX_STEPS`] and [`MAX_SPAN`].
pub fn check(steps: &[Step]) -> Result<(), StepsError> {
    let error = |index: usize, field: &str, message: String| StepsError {
        field: if field.is_empty() {
            format!("steps[{index}]")
        } else {
            format!("steps[{index}].{field}")
        },
        message,
    };
    if steps.len() > MAX_STEPS {
        return Err(StepsError {
            field: "steps".to_owned(),
            message: format!("{} steps; at most {MAX_STEPS}", steps.len()),
        });
    }
    let mut channels = BTreeSet::new();
    let mut span = Duration::ZERO;
    for (index, step) in steps.iter().enumerate() {
        let kinds = [
            step.channel.is_some(),
            step.wait.is_some(),
            step.wait_until.is_some(),
        ];
        if kinds.iter().filter(|set| **set).count() != 1 {
            return Err(error(
                index,
                "",
                "needs exactly one of channel, wait and wait_until".to_owned(),
            ));
        }
        let wait = step.wait_for().map_err(|m| error(index, "wait", m))?;
        step.wait_until_time()
            .map_err(|m| error(index, "wait_until", m))?;
        span += wait.unwrap_or_default();
        if step.wait_until.is_some() {
            span += Duration::from_secs(86_400);
        }
        match step.channel {
            Some(channel) => {
                if !channels.insert(channel) {
                    return Err(error(
                        index,
                        "channel",
                        format!("{channel} is already an earlier step; each channel goes out once"),
                    ));
                }
                if step.always && !step.unless.is_empty() {
                    return Err(error(
                        index,
                        "always",
                        "a step sent always cannot have unless".to_owned(),
                    ));
                }
            }
            None => {
                let option = if !step.unless.is_empty() {
                    Some("unless")
                } else if step.always {
                    Some("always")
                } else if step.min_priority.is_some() {
                    Some("min_priority")
                } else {
                    None
                };
                if let Some(option) = option {
                    return Err(error(
                        index,
                        option,
                        "only a channel step takes this option".to_owned(),
                    ));
                }
            }
        }
    }
    if channels.is_empty() {
        return Err(StepsError {
            field: "steps".to_owned(),
            message: "no step sends on a channel".to_owned(),
        });
    }
    if span > MAX_SPAN {
        return Err(StepsError {
            field: "steps".to_owned(),
            message: "the waits add up to more than 31d (a wait_until counts as a day)".to_owned(),
        });
    }
    Ok(())
}

/// The channels a type's steps send on.
pub fn channels(steps: &[Step]) -> BTreeSet<ChannelKind> {
    steps.iter().filter_map(|step| step.channel).collect()
}

/// One channel step, timed: what the engine plans a delivery for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStep {
    pub channel: ChannelKind,
    /// When the step is due (before quiet hours).
    pub at: Timestamp,
    /// Checked when the delivery comes due; `None` sends it regardless.
    pub gate: Option<StepGate>,
}

/// The channel steps of `steps` for a notification of `priority` created
/// at `start`, each with its time in `zone` and its gate (see the module
/// doc). Steps below their `min_priority` are left out. Steps are assumed
/// checked ([`check`]); a step that no longer parses waits no time.
pub fn schedule(
    steps: &[Step],
    start: Timestamp,
    zone: &TimeZone,
    priority: Priority,
) -> Vec<PlannedStep> {
    let mut at = start;
    let mut waited = false;
    let mut planned = Vec::new();
    for (index, step) in steps.iter().enumerate() {
        if let Ok(Some(wait)) = step.wait_for() {
            at = at
                .checked_add(jiff::SignedDuration::try_from(wait).unwrap_or_default())
                .unwrap_or(at);
            waited = true;
            continue;
        }
        if let Ok(Some(time)) = step.wait_until_time() {
            at = next_wall_time(at, time, zone).unwrap_or(at);
            waited = true;
            continue;
        }
        let Some(channel) = step.channel else {
            continue;
        };
        if step.min_priority.is_some_and(|min| priority < min) {
            continue;
        }
        let gated = !step.always && (waited || !step.unless.is_empty());
        let gate = gated.then(|| {
            let mut unless = BTreeSet::from([Engagement::Read, Engagement::Clicked]);
            unless.extend(step.unless.iter().copied());
            StepGate {
                step: u32::try_from(index + 1).unwrap_or(u32::MAX),
                unless,
            }
        });
        planned.push(PlannedStep { channel, at, gate });
    }
    planned
}

/// The first instant strictly after `after` whose wall time in `zone` is
/// `time` (a wall time skipped by a DST change resolves to the instant
/// after the gap).
fn next_wall_time(after: Timestamp, time: jiff::civil::Time, zone: &TimeZone) -> Option<Timestamp> {
    let mut date = after.to_zoned(zone.clone()).date();
    for _ in 0..3 {
        let at = crate::preferences::local_instant(date, time, zone)?;
        if at > after {
            return Some(at);
        }
        date = date.tomorrow().ok()?;
    }
    None
}

#[cfg(test)]
mod tests;
