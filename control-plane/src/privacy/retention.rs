//! Retention: how long each kind of data is kept (`[retention]` in the
//! engine config), enforced by the `retention` job of
//! [`crate::housekeeping`].
//!
//! # Promises
//!
//! * A pass removes only what is older than its kind's limit, measured
//!   from the record's own time: events by `ingested_at`; notifications by
//!   `created_at`, with their deliveries and the inbox items of those
//!   deliveries and the record of their digest folds; attempt logs of deliveries last updated before the limit
//!   are cut to their last attempt (the delivery itself stays).
//! * `"off"` keeps that kind forever.
//! * Removal is idempotent, so a pass cut short by a crash is finished by
//!   the next (when passes run, and what a failed one does: see
//!   [`crate::housekeeping`]).
//! * Profiles, devices (see `[devices]`) and preferences are current state,
//!   not history: they stay until the user is erased.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize};

use super::{Privacy, PrivacyError};
use crate::housekeeping::cutoff;
use crate::inbox::Action;
use crate::storage::block_on;

/// Notifications removed per step, so one pass never builds a huge list.
const CHUNK: usize = 1000;

/// `[retention]` in the engine config file; `None` is `"off"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Tracked events (`ingested_at`); default 395 days (13 months).
    #[serde(deserialize_with = "off_or_duration")]
    pub events: Option<Duration>,
    /// Notifications with their deliveries and inbox items; default 180
    /// days.
    #[serde(deserialize_with = "off_or_duration")]
    pub notifications: Option<Duration>,
    /// Delivery attempt logs beyond the last attempt; default 30 days.
    #[serde(deserialize_with = "off_or_duration")]
    pub attempt_logs: Option<Duration>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        RetentionConfig {
            events: Some(Duration::from_secs(395 * DAY)),
            notifications: Some(Duration::from_secs(180 * DAY)),
            attempt_logs: Some(Duration::from_secs(30 * DAY)),
        }
    }
}

impl RetentionConfig {
    /// Every limit longer than zero (a zero limit would remove everything
    /// at once: write `"off"` or a real age).
    pub fn validate(&self) -> Result<(), String> {
        let limits = [
            ("events", self.events),
            ("notifications", self.notifications),
            ("attempt_logs", self.attempt_logs),
        ];
        for (key, limit) in limits {
            if limit.is_some_and(|limit| limit.is_zero()) {
                return Err(format!("{key} must be longer than zero, or \"off\""));
            }
        }
        Ok(())
    }
}

/// `"off"` or a humantime duration (`"395d"`).
fn off_or_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.trim() == "off" {
        return Ok(None);
    }
    humantime::parse_duration(text.trim())
        .map(Some)
        .map_err(|error| {
            serde::de::Error::custom(format!("{error} (a duration like \"30d\", or \"off\")"))
        })
}

/// What one pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    pub events: u64,
    pub notifications: usize,
    pub deliveries: usize,
    pub inbox_items: usize,
    pub attempt_logs_trimmed: usize,
    /// Records of notifications folded into digests, forgotten with the
    /// notifications.
    pub digest_folds: u64,
}

impl Privacy {
    /// One retention pass at `now`.
    pub fn apply_retention(
        &self,
        config: &RetentionConfig,
        now: Timestamp,
    ) -> Result<RetentionReport, PrivacyError> {
        let mut report = RetentionReport::default();
        if let Some(limit) = config.events {
            report.events = block_on(self.store.prune_events(cutoff(now, limit)))?;
        }
        if let Some(limit) = config.notifications {
            let cutoff = cutoff(now, limit);
            report.digest_folds = block_on(self.digests.prune_folds(cutoff))?;
            // Deliveries and inbox items first, the notification last: a
            // pass cut short leaves the notification, and the next pass
            // finds it and finishes (nothing is left that no pass finds).
            loop {
                let old = block_on(self.notifications.created_before(cutoff, CHUNK))?;
                if old.is_empty() {
                    break;
                }
                for notification in &old {
                    let Ok(id) = uuid::Uuid::parse_str(&notification.id) else {
                        continue;
                    };
                    for delivery in block_on(self.queue.for_notification(id))? {
                        report.deliveries +=
                            usize::from(block_on(self.queue.delete(delivery.id))?.is_some());
                        // In-app items are keyed by their delivery's id.
                        let applied = block_on(self.inbox.apply(
                            &delivery.user_id,
                            &[delivery.id.to_string()],
                            Action::Delete,
                            now,
                        ))?;
                        report.inbox_items += applied.changed.len();
                    }
                }
                let ids: Vec<String> = old.into_iter().map(|n| n.id).collect();
                report.notifications += block_on(self.notifications.remove(&ids))?;
            }
        }
        if let Some(limit) = config.attempt_logs {
            report.attempt_logs_trimmed =
                block_on(self.queue.trim_attempt_logs(cutoff(now, limit)))?;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct File {
        retention: RetentionConfig,
    }

    #[test]
    fn parses_durations_and_off_and_refuses_unknown_keys() {
        let file: File =
            toml::from_str("[retention]\nevents = \"off\"\nattempt_logs = \"7d\"\n").unwrap();
        assert_eq!(file.retention.events, None);
        assert_eq!(
            file.retention.attempt_logs,
            Some(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(
            file.retention.notifications,
            RetentionConfig::default().notifications
        );
        assert!(toml::from_str::<File>("[retention]\nevent = \"1d\"\n").is_err());
        assert!(toml::from_str::<File>("[retention]\nevents = \"soon\"\n").is_err());
        let zero: File = toml::from_str("[retention]\nevents = \"0s\"\n").unwrap();
        assert!(zero.retention.validate().is_err());
    }
}
