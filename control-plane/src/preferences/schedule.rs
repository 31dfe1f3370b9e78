//! Time rules of preferences: IANA time zones, quiet hours and digest times.
//!
//! All computations go through jiff's zoned arithmetic with the system tz
//! database (`/usr/share/zoneinfo`), so they are DST-correct: a local wall
//! time that does not exist (spring forward) resolves to the later instant,
//! one that exists twice (fall back) to the earlier one (jiff's
//! "compatible" disambiguation, as RFC 5545 and Temporal do).

use std::fmt;

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Unit, Zoned, ZonedRound};
use serde::{Deserialize, Serialize};

use super::PreferenceError;

/// Local hour at which daily and weekly digests go out.
pub const DIGEST_HOUR: i8 = 9;
/// Day on which weekly digests go out.
pub const WEEKLY_DIGEST_DAY: Weekday = Weekday::Monday;

/// An IANA time zone, kept with its name so it serializes as that name.
/// Deserializing an unknown name fails with [`PreferenceError::TimeZone`]'s
/// message.
#[derive(Clone, PartialEq)]
pub struct Tz {
    name: String,
    tz: TimeZone,
}

impl Tz {
    /// Looks the name up in the tz database (e.g. `Europe/Berlin`).
    pub fn new(name: &str) -> Result<Self, PreferenceError> {
        let tz = TimeZone::get(name).map_err(|error| PreferenceError::TimeZone {
            name: name.to_owned(),
            detail: error.to_string(),
        })?;
        Ok(Tz {
            name: name.to_owned(),
            tz,
        })
    }

    pub fn utc() -> Self {
        Tz {
            name: "UTC".to_owned(),
            tz: TimeZone::UTC,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }
}

impl fmt::Debug for Tz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tz({})", self.name)
    }
}

impl Serialize for Tz {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name)
    }
}

impl<'de> Deserialize<'de> for Tz {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Tz::new(&name).map_err(serde::de::Error::custom)
    }
}

/// A daily window, in the user's time zone, during which non-critical
/// messages are held (never dropped) until the window ends. `start == end`
/// is an empty window. A window with `start > end` crosses midnight
/// (`22:00`–`07:00`). Start is inclusive, end exclusive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "QuietHoursRepr", into = "QuietHoursRepr")]
pub struct QuietHours {
    start: Time,
    end: Time,
    timezone: Tz,
}

/// The wire form: `{ "start": "22:00", "end": "07:00", "timezone": "Europe/Berlin" }`,
/// whose schema is the API's `QuietHours` (the field docs are its
/// descriptions).
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(
    as = QuietHours,
    description = "Messages inside the window are held (never dropped) until it ends."
)]
pub(crate) struct QuietHoursRepr {
    /// `HH:MM`, inclusive.
    #[schema(pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$", examples("22:00"))]
    start: String,
    /// `HH:MM`, exclusive; before `start` crosses midnight; equal to it is
    /// an empty window.
    #[schema(pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$", examples("07:00"))]
    end: String,
    /// IANA zone name (`format: iana-time-zone`, a name in the server's
    /// time zone database); another name is a 400.
    #[schema(format = "iana-time-zone", examples("Europe/Berlin"))]
    timezone: String,
}

impl TryFrom<QuietHoursRepr> for QuietHours {
    type Error = PreferenceError;

    fn try_from(repr: QuietHoursRepr) -> Result<Self, Self::Error> {
        QuietHours::new(&repr.start, &repr.end, &repr.timezone)
    }
}

impl From<QuietHours> for QuietHoursRepr {
    fn from(quiet: QuietHours) -> Self {
        QuietHoursRepr {
            start: format_hhmm(quiet.start),
            end: format_hhmm(quiet.end),
            timezone: quiet.timezone.name,
        }
    }
}

fn format_hhmm(time: Time) -> String {
    format!("{:02}:{:02}", time.hour(), time.minute())
}

fn parse_hhmm(field: &'static str, text: &str) -> Result<Time, PreferenceError> {
    hhmm(text).ok_or_else(|| PreferenceError::QuietHoursTime {
        field,
        value: text.to_owned(),
    })
}

/// A wall time written `HH:MM` (24-hour, two digits each), as quiet hours
/// and workflow steps (`wait_until`) take it.
pub(crate) fn hhmm(text: &str) -> Option<Time> {
    let (hour, minute) = text.split_once(':')?;
    // Digits only: `i8::from_str` also takes a sign, which let "+1:05" in
    // as 01:05 (and then be stored and shown as a different text).
    let two_digits = |part: &str| part.len() == 2 && part.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(hour) || !two_digits(minute) {
        return None;
    }
    Time::new(hour.parse().ok()?, minute.parse().ok()?, 0, 0).ok()
}

impl QuietHours {
    /// `start` and `end` as `HH:MM` (24 h), `timezone` an IANA name.
    pub fn new(start: &str, end: &str, timezone: &str) -> Result<Self, PreferenceError> {
        Ok(QuietHours {
            start: parse_hhmm("start", start)?,
            end: parse_hhmm("end", end)?,
            timezone: Tz::new(timezone)?,
        })
    }

    pub fn timezone(&self) -> &Tz {
        &self.timezone
    }

    /// The window's start as `HH:MM`, as [`QuietHours::new`] takes it.
    pub fn start_hhmm(&self) -> String {
        format_hhmm(self.start)
    }

    /// The window's end as `HH:MM`.
    pub fn end_hhmm(&self) -> String {
        format_hhmm(self.end)
    }

    /// When the window ends, if `now` is inside it; `None` otherwise.
    pub fn quiet_until(&self, now: Timestamp) -> Option<Timestamp> {
        if self.start == self.end {
            return None;
        }
        let tz = self.timezone.time_zone();
        let local = now.to_zoned(tz.clone());
        let today = local.date();
        let time = local.time();
        let end_date = if self.start < self.end {
            // Same-day window.
            if time < self.start || time >= self.end {
                return None;
            }
            today
        } else if time >= self.start {
            // Late part of a window that crosses midnight.
            today.tomorrow().ok()?
        } else if time < self.end {
            // Early part of it.
            today
        } else {
            return None;
        };
        let until = local_instant(end_date, self.end, tz)?;
        // A window edge inside a DST gap can land before `now`; then the
        // window is over.
        (until > now).then_some(until)
    }
}

/// The instant of a local wall time, with "compatible" disambiguation.
pub(crate) fn local_instant(date: Date, time: Time, tz: &TimeZone) -> Option<Timestamp> {
    tz.to_ambiguous_zoned(date.to_datetime(time))
        .compatible()
        .ok()
        .map(|zoned| zoned.timestamp())
}

/// How often a user hears about one notification type.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[schema(
    description = "How often a type is sent: each at once, or folded into an hourly, daily or weekly digest, or never."
)]
pub enum Frequency {
    /// Each notification on its own, at once (subject to quiet hours).
    #[default]
    Instant,
    /// One digest at the top of each local hour.
    Hourly,
    /// One digest a day at [`DIGEST_HOUR`]:00 local.
    Daily,
    /// One digest a week, [`WEEKLY_DIGEST_DAY`] at [`DIGEST_HOUR`]:00 local.
    Weekly,
    /// Not at all.
    Never,
}

/// When the digest that collects a notification arriving at `now` goes out:
/// the first slot strictly after `now` (hourly: the next top of the hour in
/// local time; daily: the next 09:00 local; weekly: the next Monday 09:00
/// local). `Instant` and `Never` have no slot and return `now`.
pub fn next_digest_at(frequency: Frequency, now: Timestamp, tz: &TimeZone) -> Timestamp {
    let local = now.to_zoned(tz.clone());
    match frequency {
        Frequency::Instant | Frequency::Never => now,
        Frequency::Hourly => next_top_of_hour(&local).unwrap_or(now),
        Frequency::Daily => next_local_slot(&local, |_| true).unwrap_or(now),
        Frequency::Weekly => {
            next_local_slot(&local, |date| date.weekday() == WEEKLY_DIGEST_DAY).unwrap_or(now)
        }
    }
}

fn next_top_of_hour(local: &Zoned) -> Option<Timestamp> {
    let floor = local
        .round(
            ZonedRound::new()
                .smallest(Unit::Hour)
                .mode(jiff::RoundMode::Trunc),
        )
        .ok()?;
    // Absolute hour arithmetic: across a DST change the "next hour" is one
    // real hour later, not a repeated or skipped wall-clock hour.
    floor
        .checked_add(1.hour())
        .ok()
        .map(|next| next.timestamp())
}

fn next_local_slot(local: &Zoned, day_matches: impl Fn(Date) -> bool) -> Option<Timestamp> {
    let slot_time = Time::new(DIGEST_HOUR, 0, 0, 0).ok()?;
    let now = local.timestamp();
    let mut date = local.date();
    // Eight days always contain a matching day strictly after today's slot.
    for _ in 0..=7 {
        if day_matches(date) {
            let at = local_instant(date, slot_time, local.time_zone())?;
            if at > now {
                return Some(at);
            }
        }
        date = date.tomorrow().ok()?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn quiet_hours_cross_midnight() {
        let quiet = QuietHours::new("22:00", "07:00", "Europe/Berlin").unwrap();
        // 23:30 Berlin (CEST, +02:00) on 2024-06-10.
        assert_eq!(
            quiet.quiet_until(ts("2024-06-10T21:30:00Z")),
            Some(ts("2024-06-11T05:00:00Z"))
        );
        // 03:00 Berlin: ends the same morning.
        assert_eq!(
            quiet.quiet_until(ts("2024-06-11T01:00:00Z")),
            Some(ts("2024-06-11T05:00:00Z"))
        );
        // Exactly 07:00 is outside (end exclusive), 22:00 inside.
        assert_eq!(quiet.quiet_until(ts("2024-06-11T05:00:00Z")), None);
        assert!(quiet.quiet_until(ts("2024-06-10T20:00:00Z")).is_some());
        // Noon: outside.
        assert_eq!(quiet.quiet_until(ts("2024-06-11T10:00:00Z")), None);
    }

    #[test]
    fn quiet_hours_same_day_and_empty() {
        let quiet = QuietHours::new("12:00", "14:00", "UTC").unwrap();
        assert_eq!(
            quiet.quiet_until(ts("2024-06-10T13:00:00Z")),
            Some(ts("2024-06-10T14:00:00Z"))
        );
        assert_eq!(quiet.quiet_until(ts("2024-06-10T15:00:00Z")), None);
        let empty = QuietHours::new("08:00", "08:00", "UTC").unwrap();
        assert_eq!(empty.quiet_until(ts("2024-06-10T08:00:00Z")), None);
    }

    #[test]
    fn quiet_hours_on_dst_change_days() {
        let quiet = QuietHours::new("22:00", "07:00", "Europe/Berlin").unwrap();
        // Spring forward: night of 2024-03-30/31; 23:00 CET (+01:00) the
        // evening before, window ends 07:00 CEST (+02:00) = 05:00Z, one
        // absolute hour shorter than a normal night.
        assert_eq!(
            quiet.quiet_until(ts("2024-03-30T22:00:00Z")),
            Some(ts("2024-03-31T05:00:00Z"))
        );
        // Fall back: night of 2024-10-26/27; ends 07:00 CET = 06:00Z.
        assert_eq!(
            quiet.quiet_until(ts("2024-10-26T21:00:00Z")),
            Some(ts("2024-10-27T06:00:00Z"))
        );
        // 02:30 local exists twice on 2024-10-27; both are inside.
        assert!(quiet.quiet_until(ts("2024-10-27T00:30:00Z")).is_some());
        assert!(quiet.quiet_until(ts("2024-10-27T01:30:00Z")).is_some());

        // New York, spring forward 2024-03-10 at 02:00: a window ending at
        // 02:30 (which does not exist that day) ends at 03:30 EDT.
        let gap = QuietHours::new("01:00", "02:30", "America/New_York").unwrap();
        // 01:30 EST = 06:30Z.
        assert_eq!(
            gap.quiet_until(ts("2024-03-10T06:30:00Z")),
            Some(ts("2024-03-10T07:30:00Z"))
        );
    }

    #[test]
    fn invalid_quiet_hours_are_clear_errors() {
        let error = QuietHours::new("22:00", "07:00", "Mars/Olympus").unwrap_err();
        assert!(error.to_string().contains("Mars/Olympus"), "{error}");
        let error = QuietHours::new("25:00", "07:00", "UTC").unwrap_err();
        assert!(error.to_string().contains("start"), "{error}");
        assert!(QuietHours::new("7:00", "08:00", "UTC").is_err());
        let json = r#"{"start":"22:00","end":"07:00","timezone":"Nowhere/Land"}"#;
        let error = serde_json::from_str::<QuietHours>(json).unwrap_err();
        assert!(error.to_string().contains("Nowhere/Land"), "{error}");
        let ok: QuietHours =
            serde_json::from_str(r#"{"start":"22:00","end":"07:00","timezone":"UTC"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"start":"22:00","end":"07:00","timezone":"UTC"}"#
        );
    }

    /// Found by the property tests: a sign passed for a digit.
    #[test]
    fn quiet_hours_refuse_signs() {
        for text in ["+0:+0", "+1:05", "-0:30", "07:+5"] {
            let error = QuietHours::new(text, "08:00", "UTC").unwrap_err();
            assert_eq!(
                error,
                PreferenceError::QuietHoursTime {
                    field: "start",
                    value: text.to_owned()
                }
            );
        }
    }

    #[test]
    fn digest_times() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        // Wednesday 2024-06-12 10:17 CEST.
        let now = ts("2024-06-12T08:17:00Z");
        assert_eq!(
            next_digest_at(Frequency::Hourly, now, &berlin),
            ts("2024-06-12T09:00:00Z")
        );
        // 09:00 today has passed: tomorrow 09:00 CEST.
        assert_eq!(
            next_digest_at(Frequency::Daily, now, &berlin),
            ts("2024-06-13T07:00:00Z")
        );
        // Before 09:00: today.
        assert_eq!(
            next_digest_at(Frequency::Daily, ts("2024-06-12T05:00:00Z"), &berlin),
            ts("2024-06-12T07:00:00Z")
        );
        // Next Monday 2024-06-17 09:00 CEST.
        assert_eq!(
            next_digest_at(Frequency::Weekly, now, &berlin),
            ts("2024-06-17T07:00:00Z")
        );
        // Monday exactly at 09:00: strictly after, so the Monday after.
        assert_eq!(
            next_digest_at(Frequency::Weekly, ts("2024-06-17T07:00:00Z"), &berlin),
            ts("2024-06-24T07:00:00Z")
        );
        assert_eq!(next_digest_at(Frequency::Instant, now, &berlin), now);
        assert_eq!(next_digest_at(Frequency::Never, now, &berlin), now);
    }

    #[test]
    fn digest_times_across_dst() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        // Saturday 2024-03-30 10:00 CET: daily digest next day 09:00 CEST.
        assert_eq!(
            next_digest_at(Frequency::Daily, ts("2024-03-30T09:00:00Z"), &berlin),
            ts("2024-03-31T07:00:00Z")
        );
        // 01:30 CET on spring-forward day: next hour is 03:00 CEST (01:00Z).
        assert_eq!(
            next_digest_at(Frequency::Hourly, ts("2024-03-31T00:30:00Z"), &berlin),
            ts("2024-03-31T01:00:00Z")
        );
        let india = TimeZone::get("Asia/Kolkata").unwrap();
        // Local top of hour in a +05:30 zone: 10:10 IST → 11:00 IST.
        assert_eq!(
            next_digest_at(Frequency::Hourly, ts("2024-06-12T04:40:00Z"), &india),
            ts("2024-06-12T05:30:00Z")
        );
    }
}
