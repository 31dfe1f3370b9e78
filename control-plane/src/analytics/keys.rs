//! How rollups are keyed in the `analytics_rollups` table, and the UTC
//! periods (hour, day, ISO week, month) they are bucketed by.
//!
//! A key is a family tag followed by parts, each part ended by a 0x00
//! byte, so a prefix of parts selects a range (all of a day, all of an
//! actor). A NUL inside an id is replaced by 0x01 (ids with NULs are not
//! something applications send; they stay apart from their neighbours).
//! Period strings sort in time order ("2026-11-22", "2026-W47",
//! "2026-11", "2026-11-22T05"), so a range of days is a key range: the
//! table compares keys bytewise on both engines.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

/// Builds a key: `family`, then each part followed by 0x00.
pub fn key(family: &str, parts: &[&str]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(family.len() + 1 + parts.iter().map(|p| p.len() + 1).sum::<usize>());
    out.extend_from_slice(family.as_bytes());
    out.push(0);
    for part in parts {
        out.extend(part.bytes().map(|byte| if byte == 0 { 1 } else { byte }));
        out.push(0);
    }
    out
}

/// The parts of `key` after its family, as text.
pub fn parts(key: &[u8]) -> Vec<String> {
    let mut split = key.split(|byte| *byte == 0);
    split.next();
    let mut parts: Vec<String> = split
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect();
    // The key ends with a separator, which leaves one empty trailing part.
    parts.pop();
    parts
}

/// The actor an event counts for: `u:<user id>` once a user is known,
/// else `a:<anonymous id>`.
pub fn user_actor(user_id: &str) -> String {
    format!("u:{user_id}")
}

pub fn anonymous_actor(anonymous_id: &str) -> String {
    format!("a:{anonymous_id}")
}

/// How an actor is shown in reports: the user id, or `anonymous:<id>`.
pub fn display_actor(actor: &str) -> String {
    match actor.split_once(':') {
        Some(("u", user)) => user.to_owned(),
        Some(("a", anonymous)) => format!("anonymous:{anonymous}"),
        _ => actor.to_owned(),
    }
}

pub fn utc_date(at: Timestamp) -> Date {
    at.to_zoned(TimeZone::UTC).date()
}

pub fn day(date: Date) -> String {
    date.to_string()
}

pub fn hour(at: Timestamp) -> String {
    let zoned = at.to_zoned(TimeZone::UTC);
    format!("{}T{:02}", zoned.date(), zoned.hour())
}

/// The ISO week, e.g. "2026-W47".
pub fn week(date: Date) -> String {
    let iso = date.iso_week_date();
    format!("{:04}-W{:02}", iso.year(), iso.week())
}

pub fn month(date: Date) -> String {
    format!("{:04}-{:02}", date.year(), date.month())
}

/// The Monday of `date`'s ISO week.
pub fn week_start(date: Date) -> Date {
    let back = i64::from(date.weekday().to_monday_zero_offset());
    date.checked_sub(jiff::Span::new().days(back))
        .unwrap_or(date)
}

/// The Sunday of `date`'s ISO week.
pub fn week_end(date: Date) -> Date {
    week_start(date)
        .checked_add(jiff::Span::new().days(6))
        .unwrap_or(date)
}

pub fn month_start(date: Date) -> Date {
    date.first_of_month()
}

/// Encodes a counter vector: big-endian i64s.
pub fn encode_counters(values: &[i64]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|value| value.to_be_bytes())
        .collect()
}

/// Decodes a counter vector; a stored vector shorter than a newer
/// version's reads as zeros at the end (fields are only ever appended).
pub fn decode_counters(bytes: &[u8]) -> Vec<i64> {
    bytes
        .chunks_exact(8)
        .map(|chunk| i64::from_be_bytes(chunk.try_into().unwrap_or([0; 8])))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_back_into_parts() {
        let built = key("r", &["2026-11-22", "sku\0-1"]);
        assert_eq!(
            parts(&built),
            vec!["2026-11-22".to_owned(), "sku\u{1}-1".to_owned()]
        );
        assert!(built.starts_with(&key("r", &["2026-11-22"])));
    }

    #[test]
    fn periods() {
        let date: Date = "2026-11-22".parse().unwrap();
        assert_eq!(week(date), "2026-W47");
        assert_eq!(month(date), "2026-11");
        assert_eq!(week_start(date).to_string(), "2026-11-16");
        // ISO week-years: 2027-01-01 is a Friday in 2026-W53.
        assert_eq!(week("2027-01-01".parse().unwrap()), "2026-W53");
        let at: Timestamp = "2026-11-22T05:31:00Z".parse().unwrap();
        assert_eq!(hour(at), "2026-11-22T05");
    }

    #[test]
    fn counters_grow_by_appending() {
        assert_eq!(decode_counters(&encode_counters(&[1, -2])), vec![1, -2]);
    }
}
