//! [`ActorState`]: everything the rollups keep about one actor (a user,
//! or an anonymous visitor) that changes with the actor's events, in one
//! record (`a`).
//!
//! One record, not one key per figure, because a pass's cost is per key
//! read and written: folding an event reads and writes the actor once per
//! pass, however many of its figures (engagement, active days, open
//! session, funnel progress, events by name, features) the event moves.
//!
//! Encoding: a length byte, that many big-endian i64 engagement counters
//! ([`profile`]), then the rest as JSON. The counters come first so the
//! all-users ranking reads them without decoding the rest; both parts
//! grow by appending (a shorter stored counter vector reads as zeros at
//! the end, JSON fields have defaults).

use std::collections::BTreeMap;

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use super::AnalyticsError;
use super::activity::{FunnelPass, OpenSession};
use super::keys::{decode_counters, encode_counters};
use super::layout::profile;

/// One actor's state (see the module doc).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActorState {
    /// Engagement counters, indexed by [`profile`].
    pub profile: Vec<i64>,
    pub detail: ActorDetail,
}

/// The part of [`ActorState`] kept as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActorDetail {
    /// The UTC days the actor was active on, ascending: the actor is new
    /// in a day, ISO week or month when none of them falls in it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<Date>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_session: Option<OpenSession>,
    /// Progress through each configured funnel, by funnel name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub funnels: BTreeMap<String, FunnelPass>,
    /// Events by name: `[count, of which with a feature property]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub events: BTreeMap<String, [i64; 2]>,
    /// Uses per `feature` property value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub features: BTreeMap<String, i64>,
}

impl ActorState {
    pub fn new() -> Self {
        ActorState {
            profile: vec![0; profile::LEN],
            detail: ActorDetail::default(),
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, AnalyticsError> {
        let (counters, rest) = split(bytes)?;
        let mut profile = decode_counters(counters);
        profile.resize(profile::LEN.max(profile.len()), 0);
        let detail = serde_json::from_slice(rest)
            .map_err(|error| AnalyticsError::Corrupt(format!("actor record: {error}")))?;
        Ok(ActorState { profile, detail })
    }

    /// The engagement counters only, without decoding the rest.
    pub fn decode_profile(bytes: &[u8]) -> Result<Vec<i64>, AnalyticsError> {
        let (counters, _) = split(bytes)?;
        let mut profile = decode_counters(counters);
        profile.resize(profile::LEN.max(profile.len()), 0);
        Ok(profile)
    }

    pub fn encode(&self) -> Result<Vec<u8>, AnalyticsError> {
        let count = u8::try_from(self.profile.len())
            .map_err(|_| AnalyticsError::Corrupt("too many profile counters".to_owned()))?;
        let mut out = vec![count];
        out.extend(encode_counters(&self.profile));
        serde_json::to_writer(&mut out, &self.detail)
            .map_err(|error| AnalyticsError::Corrupt(error.to_string()))?;
        Ok(out)
    }

    /// Records activity on `day`; returns whether the day, its ISO week
    /// and its month are new to the actor (in that order).
    pub fn mark_day(&mut self, day: Date) -> [bool; 3] {
        let days = &self.detail.days;
        let at = days.partition_point(|known| *known < day);
        if days.get(at) == Some(&day) {
            return [false; 3];
        }
        let new = [
            true,
            !self.has_day_in(super::keys::week_start(day), super::keys::week_end(day)),
            !self.has_day_in(day.first_of_month(), day.last_of_month()),
        ];
        self.detail.days.insert(at, day);
        self.profile[profile::ACTIVE_DAYS] = self.detail.days.len() as i64;
        new
    }

    /// Whether the actor was active on a day from `from` to `to`.
    pub fn has_day_in(&self, from: Date, to: Date) -> bool {
        let days = &self.detail.days;
        let at = days.partition_point(|known| *known < from);
        days.get(at).is_some_and(|day| *day <= to)
    }
}

fn split(bytes: &[u8]) -> Result<(&[u8], &[u8]), AnalyticsError> {
    let corrupt = || AnalyticsError::Corrupt("actor record is truncated".to_owned());
    let (&count, rest) = bytes.split_first().ok_or_else(corrupt)?;
    let width = usize::from(count) * 8;
    if rest.len() < width {
        return Err(corrupt());
    }
    Ok(rest.split_at(width))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> Date {
        text.parse().unwrap()
    }

    #[test]
    fn round_trips_and_reads_counters_alone() {
        let mut state = ActorState::new();
        state.profile[profile::EVENTS] = 7;
        state.detail.events.insert("view".to_owned(), [5, 1]);
        state.mark_day(date("2026-11-22"));
        let bytes = state.encode().unwrap();
        assert_eq!(ActorState::decode(&bytes).unwrap(), state);
        assert_eq!(ActorState::decode_profile(&bytes).unwrap(), state.profile);
        assert!(ActorState::decode(&bytes[..3]).is_err());
    }

    #[test]
    fn days_say_what_is_new() {
        let mut state = ActorState::new();
        // Sunday 2026-11-22 ends ISO week 47.
        assert_eq!(state.mark_day(date("2026-11-22")), [true; 3]);
        assert_eq!(state.mark_day(date("2026-11-22")), [false; 3]);
        // Monday: a new week, same month.
        assert_eq!(state.mark_day(date("2026-11-23")), [true, true, false]);
        // Out of order: the 20th is in week 47, already counted.
        assert_eq!(state.mark_day(date("2026-11-20")), [true, false, false]);
        // December 1st is a Tuesday of week 49: a new week and month.
        assert_eq!(state.mark_day(date("2026-12-01")), [true, true, true]);
        assert_eq!(state.profile[profile::ACTIVE_DAYS], 4);
        assert_eq!(
            state.detail.days,
            ["2026-11-20", "2026-11-22", "2026-11-23", "2026-12-01"].map(date)
        );
    }
}
