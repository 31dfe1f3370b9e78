//! The rollup families of the `analytics_rollups` table: which key holds
//! what, and the index of each figure in a counter vector. Everything that
//! reads or writes the rollups goes through these, so the layout is in one
//! place.
//!
//! | family | key parts | value |
//! |---|---|---|
//! | `cursor` | | the event feed position folded so far |
//! | `session_ids` | | [count] of inferred sessions named so far |
//! | `sum` | granularity (`d`/`w`/`m`), period | [`SUMMARY`] counters |
//! | `se` | day (of session start) | [`SESSIONS`] counters |
//! | `r` | granularity, period, resource | [`ACTIONS`] counters |
//! | `rx` | granularity, period, resource, event name | [count] of other event names |
//! | `f` | funnel, day of entry | count per step |
//! | `dh` / `dd` | hour / day (of creation), type, channel | [`DELIVERY`] counters |
//! | `td` | day, template, type, channel | [`DELIVERY`] counters |
//! | `o` | day, outcome, type, channel, template | [count, amount] |
//! | `id` | anonymous id | the user id it identified as |
//! | `a` | actor | the actor's record ([`ActorState`]): engagement, active days, open session, funnel progress, events by name, features |
//! | `as` | actor | empty: the actor has an open session (for the inactivity sweep) |
//! | `ax` | actor, start (ms), session | an ended session |
//! | `at` | actor | the user's latest notification touch (`attribution`) |
//! | `aal` | actor, anonymous id | an anonymous id linked to the user |
//! | `adl` | actor, day, type, channel | the user's [`DELIVERY`] counters |
//!
//! Per-actor families all start with the actor, so erasing a user is a
//! prefix removal per family.
//!
//! [`ActorState`]: super::actor::ActorState

use super::keys::key;

pub const CURSOR: &[u8] = b"cursor";
/// The counter that names inferred sessions (`inferred-<n>`), so a name
/// is never used twice.
pub const SESSION_IDS: &[u8] = b"session_ids";
/// The periods summaries and unique sets are kept for: day, ISO week, month.
pub const GRANULARITIES: [&str; 3] = ["d", "w", "m"];

/// `sum`: events, unique users, unique sessions.
pub mod summary {
    pub const EVENTS: usize = 0;
    pub const USERS: usize = 1;
    pub const SESSIONS: usize = 2;
}

/// `se`: sessions started, ended, total duration of the ended (ms).
pub mod sessions {
    pub const STARTED: usize = 0;
    pub const ENDED: usize = 1;
    pub const DURATION_MS: usize = 2;
}

/// An actor's engagement counters (the head of its `a` record).
pub mod profile {
    pub const EVENTS: usize = 0;
    pub const SESSIONS: usize = 1;
    pub const TIME_SPENT_MS: usize = 2;
    pub const ACTIVE_DAYS: usize = 3;
    pub const FIRST_SEEN_MS: usize = 4;
    pub const LAST_SEEN_MS: usize = 5;
    pub const LEN: usize = 6;
}

/// The standard resource actions, in counter order; other event names
/// go to `rx`. Segment's e-commerce names count as the action they mean.
pub const ACTIONS: [(&str, &[&str]); 7] = [
    ("view", &["view", "Product Viewed"]),
    ("click", &["click", "Product Clicked"]),
    ("favorite", &["favorite", "Product Added to Wishlist"]),
    (
        "unfavorite",
        &["unfavorite", "Product Removed from Wishlist"],
    ),
    ("cart_add", &["cart_add", "Product Added"]),
    ("cart_remove", &["cart_remove", "Product Removed"]),
    ("purchase", &["purchase", "Order Completed"]),
];

/// The index of `event` in [`ACTIONS`], if it is a standard action.
pub fn action_index(event: &str) -> Option<usize> {
    ACTIONS.iter().position(|(_, names)| names.contains(&event))
}

/// `dh`, `dd`, `td`, `adl`: one delivery cohort's figures.
pub mod delivery {
    pub const SENT: usize = 0;
    pub const DELIVERED: usize = 1;
    pub const OPENED: usize = 2;
    pub const READ: usize = 3;
    pub const CLICKED: usize = 4;
    /// Every failure for good, also those reported after sending.
    pub const FAILED: usize = 5;
    pub const BOUNCED: usize = 6;
    pub const DEAD_LETTERED: usize = 7;
    pub const RETRIED: usize = 8;
    pub const COMPLAINED: usize = 9;
    /// Failures before the provider accepted it (so `sent` does not
    /// include them): the failure rate's denominator needs them.
    pub const FAILED_UNSENT: usize = 10;
    pub const COST: usize = 11;
    pub const CONVERSIONS: usize = 12;
    pub const REVENUE: usize = 13;
    /// Then, for deliver, read and click: count, sum (ms), and one count
    /// per [`BUCKETS_SECONDS`] bucket plus one for longer.
    pub const TIMES: usize = 14;
    pub const BUCKETS_SECONDS: [i64; 16] = [
        1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21_600, 43_200, 86_400, 259_200, 604_800,
    ];
    pub const TIME_WIDTH: usize = 2 + BUCKETS_SECONDS.len() + 1;
    pub const LEN: usize = TIMES + 3 * TIME_WIDTH;

    /// Which duration a time belongs to.
    #[derive(Debug, Clone, Copy)]
    pub enum Time {
        Deliver = 0,
        Read = 1,
        Click = 2,
    }

    /// The counter changes recording one duration of `ms`.
    pub fn time_deltas(time: Time, ms: i64) -> [(usize, i64); 3] {
        let base = TIMES + time as usize * TIME_WIDTH;
        let seconds = (ms.max(0) + 999) / 1000;
        let bucket = BUCKETS_SECONDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS_SECONDS.len());
        [(base, 1), (base + 1, ms.max(0)), (base + 2 + bucket, 1)]
    }

    /// Mean and 95th percentile (seconds) of a duration from summed
    /// counters. The percentile is the upper bound of the bucket it falls
    /// in (the last bucket's lower bound when beyond the last bound).
    pub fn time_stats(values: &[i64], time: Time) -> Option<(f64, f64)> {
        let base = TIMES + time as usize * TIME_WIDTH;
        let at = |index: usize| values.get(index).copied().unwrap_or(0);
        let count = at(base);
        if count <= 0 {
            return None;
        }
        let mean = at(base + 1) as f64 / count as f64 / 1000.0;
        let needed = (count as f64 * 0.95).ceil() as i64;
        let mut seen = 0;
        let mut p95 = *BUCKETS_SECONDS.last().unwrap_or(&0) as f64;
        for (bucket, bound) in BUCKETS_SECONDS.iter().enumerate() {
            seen += at(base + 2 + bucket);
            if seen >= needed {
                p95 = *bound as f64;
                break;
            }
        }
        Some((mean, p95))
    }
}

pub fn summary_key(granularity: &str, period: &str) -> Vec<u8> {
    key("sum", &[granularity, period])
}

pub fn actor_key(actor: &str) -> Vec<u8> {
    key("a", &[actor])
}

pub fn open_session_key(actor: &str) -> Vec<u8> {
    key("as", &[actor])
}

/// The per-actor families besides the `a` record and its `as` mark
/// (which follows the record: see `overlay`), for erase.
pub const ACTOR_FAMILIES: [&str; 4] = ["ax", "at", "aal", "adl"];

#[cfg(test)]
mod tests {
    use super::delivery::*;

    #[test]
    fn times_bucket_and_summarise() {
        let mut values = vec![0; LEN];
        for ms in [500, 2_000, 2_000, 2_000, 700_000] {
            for (index, delta) in time_deltas(Time::Read, ms) {
                values[index] += delta;
            }
        }
        let (mean, p95) = time_stats(&values, Time::Read).unwrap();
        assert!((mean - 141.3).abs() < 1e-9, "{mean}");
        // 5 values: the 95th percentile is the largest, in the ≤ 1800 s bucket.
        assert_eq!(p95, 1800.0);
        assert!(time_stats(&values, Time::Click).is_none());
    }
}
