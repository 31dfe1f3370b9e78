//! The activity reports, read from the rollups (see `layout`), and the
//! date ranges every report shares.
//!
//! A range is whole UTC days: `to` defaults to today, `from` to 29 days
//! before `to`. Counters kept per day, ISO week and month let a range be
//! read from few buckets: [`buckets`] covers it with whole months, then
//! whole weeks, then days.

use std::collections::{BTreeMap, HashMap};

use jiff::civil::Date;

use super::activity::SessionRecord;
use super::actor::{ActorDetail, ActorState};
use super::keys::{self, decode_counters, display_actor, key, parts, user_actor};
use super::layout::{self, ACTIONS, profile, sessions, summary};
use super::{AnalyticsError, Cell, Granularity, Report, ReportName, ReportQuery};
use crate::storage::{RollupRow, RollupTable, StorageError, block_on};

/// What a report reads from.
pub struct Source<'a> {
    pub table: &'a RollupTable,
    pub config: &'a super::AnalyticsConfig,
    pub today: Date,
    pub now: jiff::Timestamp,
}

impl Source<'_> {
    pub fn report(&self, name: ReportName, columns: &[&'static str]) -> Report {
        Report::new(name, columns, &self.config.currency)
    }

    /// The stored values of those of `keys` that have one, in one batched
    /// read.
    pub fn get_many(&self, keys: &[Vec<u8>]) -> Result<HashMap<Vec<u8>, Vec<u8>>, AnalyticsError> {
        Ok(block_on(self.table.get(keys))?.into_iter().collect())
    }

    /// `actor`'s record, if it has one.
    pub fn actor(&self, actor: &str) -> Result<Option<ActorState>, AnalyticsError> {
        let key = layout::actor_key(actor);
        self.get_many(std::slice::from_ref(&key))?
            .remove(&key)
            .map(|bytes| ActorState::decode(&bytes))
            .transpose()
    }

    /// Every row under `prefix`, in key order.
    pub fn rows(&self, prefix: &[u8]) -> Result<Vec<RollupRow>, AnalyticsError> {
        Ok(block_on(self.table.scan_prefix(prefix))?)
    }

    /// Every counter vector keyed by `head` then a day (or an hour of a
    /// day) from `from` to `to` inclusive, in one range scan: days sort
    /// as text, so the range ends before the day after `to`.
    pub fn scan_days(
        &self,
        head: &[u8],
        from: Date,
        to: Date,
    ) -> impl Iterator<Item = Result<(Vec<String>, Vec<i64>), AnalyticsError>> + use<> {
        let mut start = head.to_vec();
        start.extend_from_slice(keys::day(from).as_bytes());
        let mut end = head.to_vec();
        match to.tomorrow() {
            Ok(after) => end.extend_from_slice(keys::day(after).as_bytes()),
            Err(_) => end.push(0xff),
        }
        counter_rows(block_on(self.table.range(&start, Some(&end))))
    }

    /// Every counter vector under `prefix`, with its key's parts.
    pub fn scan(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<String>, Vec<i64>), AnalyticsError>> + use<> {
        counter_rows(block_on(self.table.scan_prefix(prefix)))
    }
}

/// Rows read as (key parts, counters); a failed read as one error.
fn counter_rows(
    rows: Result<Vec<RollupRow>, StorageError>,
) -> impl Iterator<Item = Result<(Vec<String>, Vec<i64>), AnalyticsError>> {
    let (rows, error) = match rows {
        Ok(rows) => (rows, None),
        Err(error) => (Vec::new(), Some(error)),
    };
    error.map(|error| Err(error.into())).into_iter().chain(
        rows.into_iter()
            .map(|(key, value)| Ok((parts(&key), decode_counters(&value)))),
    )
}

/// The inclusive day range of `query`.
/// The longest range a report reads, in days (a century): a report's work
/// grows with the range's buckets, and `from=0100-01-01` once kept a
/// request busy for seconds (found by fuzzing the API).
pub const MAX_RANGE_DAYS: i32 = 36_525;

pub fn range(query: &ReportQuery, today: Date) -> Result<(Date, Date), AnalyticsError> {
    let to = query.to.unwrap_or(today);
    let from = match query.from {
        Some(from) => from,
        None => to.checked_sub(jiff::Span::new().days(29)).unwrap_or(to),
    };
    if from > to {
        return Err(AnalyticsError::Invalid {
            parameter: "from",
            message: format!("{from} is after to ({to})"),
        });
    }
    let days = to
        .since(from)
        .map(|span| span.get_days())
        .unwrap_or(i32::MAX);
    if days >= MAX_RANGE_DAYS {
        return Err(AnalyticsError::Invalid {
            parameter: "from",
            message: format!(
                "{from} to {to} is longer than a report reads ({MAX_RANGE_DAYS} days)"
            ),
        });
    }
    Ok((from, to))
}

/// Covers `from..=to` with the whole months inside it, and the days
/// before and after those with whole ISO weeks where they fit, else
/// single days: `(granularity tag, period)`, each day exactly once.
pub fn buckets(from: Date, to: Date) -> Vec<(&'static str, String)> {
    let mut first_month = from.first_of_month();
    if first_month < from {
        first_month = from.last_of_month().tomorrow().unwrap_or(from);
    }
    let mut months = Vec::new();
    let mut month = first_month;
    while month.last_of_month() <= to {
        months.push(month);
        match month.last_of_month().tomorrow() {
            Ok(next) => month = next,
            Err(_) => break,
        }
    }
    let (Some(head_end), Some(last)) = (
        months.first().and_then(|m| m.yesterday().ok()),
        months.last(),
    ) else {
        return weeks_and_days(from, to);
    };
    let mut out = weeks_and_days(from, head_end);
    out.extend(months.iter().map(|month| ("m", keys::month(*month))));
    if let Ok(tail_start) = last.last_of_month().tomorrow() {
        out.extend(weeks_and_days(tail_start, to));
    }
    out
}

fn weeks_and_days(from: Date, to: Date) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let mut day = from;
    while day <= to {
        let week_end = day.checked_add(jiff::Span::new().days(6)).unwrap_or(day);
        let (bucket, last) = if day.weekday() == jiff::civil::Weekday::Monday && week_end <= to {
            (("w", keys::week(day)), week_end)
        } else {
            (("d", keys::day(day)), day)
        };
        out.push(bucket);
        match last.tomorrow() {
            Ok(next) => day = next,
            Err(_) => break,
        }
    }
    out
}

/// The periods of `granularity` that overlap the range, each with its
/// first day.
fn periods(
    granularity: Granularity,
    from: Date,
    to: Date,
) -> Result<Vec<(&'static str, String)>, AnalyticsError> {
    let step = |date: Date, tag: &'static str| -> (&'static str, String) {
        match tag {
            "w" => (tag, keys::week(date)),
            "m" => (tag, keys::month(date)),
            _ => (tag, keys::day(date)),
        }
    };
    let (tag, start) = match granularity {
        Granularity::Day => ("d", from),
        Granularity::Week => ("w", keys::week_start(from)),
        Granularity::Month => ("m", keys::month_start(from)),
        Granularity::Hour | Granularity::Total => {
            return Err(AnalyticsError::Invalid {
                parameter: "granularity",
                message: "this report has day, week and month rows".to_owned(),
            });
        }
    };
    let mut out = Vec::new();
    let mut date = start;
    while date <= to {
        out.push(step(date, tag));
        let next = match tag {
            "w" => date.checked_add(jiff::Span::new().days(7)),
            "m" => date.checked_add(jiff::Span::new().months(1)),
            _ => date.tomorrow(),
        };
        match next {
            Ok(next) => date = next,
            Err(_) => break,
        }
    }
    Ok(out)
}

fn at(values: &[i64], index: usize) -> i64 {
    values.get(index).copied().unwrap_or(0)
}

pub fn summary(source: &Source<'_>, query: &ReportQuery) -> Result<Report, AnalyticsError> {
    let (from, to) = range(query, source.today)?;
    let mut report = source.report(
        ReportName::Summary,
        &["period", "events", "unique_users", "unique_sessions"],
    );
    let periods: Vec<(&str, String)> = periods(query.granularity.unwrap_or_default(), from, to)?
        .into_iter()
        .take(query.limit())
        .collect();
    let keys: Vec<Vec<u8>> = periods
        .iter()
        .map(|(tag, period)| layout::summary_key(tag, period))
        .collect();
    let mut stored = source.get_many(&keys)?;
    for ((_, period), key) in periods.into_iter().zip(&keys) {
        let values = stored
            .remove(key)
            .map(|bytes| decode_counters(&bytes))
            .unwrap_or_default();
        report.push(vec![
            period.into(),
            at(&values, summary::EVENTS).into(),
            at(&values, summary::USERS).into(),
            at(&values, summary::SESSIONS).into(),
        ]);
    }
    Ok(report)
}

pub fn resources(source: &Source<'_>, query: &ReportQuery) -> Result<Report, AnalyticsError> {
    let (from, to) = range(query, source.today)?;
    // The hot loop of the product ranking (every product of every bucket
    // in the range): the resource is sliced out of the key and the counters
    // added in place, without allocating per key.
    let mut totals: HashMap<Vec<u8>, [i64; ACTIONS.len()]> = HashMap::new();
    let mut add = |resource: &[u8], value: &[u8]| {
        let sum = match totals.get_mut(resource) {
            Some(sum) => sum,
            None => totals
                .entry(resource.to_vec())
                .or_insert([0; ACTIONS.len()]),
        };
        for (slot, chunk) in sum.iter_mut().zip(value.chunks_exact(8)) {
            *slot = slot.saturating_add(i64::from_be_bytes(chunk.try_into().unwrap_or([0; 8])));
        }
    };
    match &query.resource {
        // One product: its counter of each bucket, in one batched read.
        Some(resource) => {
            let keys: Vec<Vec<u8>> = buckets(from, to)
                .iter()
                .map(|(tag, period)| key("r", &[tag, period, resource]))
                .collect();
            for value in source.get_many(&keys)?.values() {
                add(resource.as_bytes(), value);
            }
        }
        None => {
            for (tag, period) in buckets(from, to) {
                let prefix = key("r", &[tag, &period]);
                for (key, value) in source.rows(&prefix)? {
                    let resource = key
                        .get(prefix.len()..key.len().saturating_sub(1))
                        .unwrap_or_default();
                    add(resource, &value);
                }
            }
        }
    }
    let mut ranked: Vec<(String, [i64; ACTIONS.len()])> = totals
        .into_iter()
        .map(|(resource, counts)| (String::from_utf8_lossy(&resource).into_owned(), counts))
        .collect();
    // Most events first; ties by resource id, so pages are stable.
    ranked.sort_by(|(a_id, a), (b_id, b)| {
        b.iter()
            .sum::<i64>()
            .cmp(&a.iter().sum::<i64>())
            .then(a_id.cmp(b_id))
    });
    let mut columns: Vec<&'static str> = vec!["resource"];
    columns.extend(ACTIONS.iter().map(|(name, _)| *name));
    columns.extend(["view_to_click", "click_to_cart", "cart_to_purchase"]);
    let mut report = source.report(ReportName::Resources, &columns);
    for (resource, values) in ranked.into_iter().take(query.limit()) {
        let count = |name: &str| values[layout::action_index(name).unwrap_or(0)] as f64;
        let mut row: Vec<Cell> = vec![resource.into()];
        row.extend(values.iter().map(|value| Cell::Int(*value)));
        row.push(Cell::ratio(count("click"), count("view")));
        row.push(Cell::ratio(count("cart_add"), count("click")));
        row.push(Cell::ratio(count("purchase"), count("cart_add")));
        report.push(row);
    }
    Ok(report)
}

pub fn resource_actions(
    source: &Source<'_>,
    query: &ReportQuery,
) -> Result<Report, AnalyticsError> {
    let (from, to) = range(query, source.today)?;
    let mut counts: BTreeMap<(String, String), i64> = BTreeMap::new();
    let wanted = |resource: &str| {
        query
            .resource
            .as_ref()
            .is_none_or(|wanted| wanted == resource)
    };
    for (tag, period) in buckets(from, to) {
        for entry in source.scan(&key("r", &[tag, &period])) {
            let (parts, values) = entry?;
            let Some(resource) = parts.into_iter().nth(2).filter(|resource| wanted(resource))
            else {
                continue;
            };
            for ((name, _), value) in ACTIONS.iter().zip(&values) {
                if *value != 0 {
                    let count = counts
                        .entry((resource.clone(), (*name).to_owned()))
                        .or_default();
                    *count = count.saturating_add(*value);
                }
            }
        }
        for entry in source.scan(&key("rx", &[tag, &period])) {
            let (mut parts, values) = entry?;
            let (Some(name), Some(resource)) = (parts.pop(), parts.pop()) else {
                continue;
            };
            if wanted(&resource) {
                let count = counts.entry((resource, name)).or_default();
                *count = count.saturating_add(at(&values, 0));
            }
        }
    }
    let mut report = source.report(
        ReportName::ResourceActions,
        &["resource", "action", "count"],
    );
    let mut rows: Vec<((String, String), i64)> = counts.into_iter().collect();
    rows.sort_by(|(a_key, a), (b_key, b)| b.cmp(a).then(a_key.cmp(b_key)));
    for ((resource, action), count) in rows.into_iter().take(query.limit()) {
        report.push(vec![resource.into(), action.into(), count.into()]);
    }
    Ok(report)
}

pub fn funnels(source: &Source<'_>, query: &ReportQuery) -> Result<Report, AnalyticsError> {
    let (from, to) = range(query, source.today)?;
    let funnels: Vec<_> = source
        .config
        .funnels
        .iter()
        .filter(|funnel| {
            query
                .funnel
                .as_ref()
                .is_none_or(|wanted| *wanted == funnel.name)
        })
        .collect();
    if let Some(wanted) = &query.funnel
        && funnels.is_empty()
    {
        return Err(AnalyticsError::Invalid {
            parameter: "funnel",
            message: format!("no funnel named `{wanted}` is configured"),
        });
    }
    let mut report = source.report(
        ReportName::Funnels,
        &[
            "funnel",
            "step",
            "event",
            "users",
            "conversion_from_previous",
            "conversion_from_start",
        ],
    );
    for funnel in funnels {
        let mut reached = vec![0_i64; funnel.steps.len()];
        let start = key("f", &[&funnel.name, &keys::day(from)]);
        // Up to `to`'s key inclusive: the first key after it is it with
        // a 0x00 appended.
        let mut end = key("f", &[&funnel.name, &keys::day(to)]);
        end.push(0);
        for (_, value) in block_on(source.table.range(&start, Some(&end)))? {
            for (index, count) in decode_counters(&value)
                .iter()
                .enumerate()
                .take(reached.len())
            {
                reached[index] += count;
            }
        }
        for (index, event) in funnel.steps.iter().enumerate() {
            let previous = if index == 0 {
                reached[0]
            } else {
                reached[index - 1]
            };
            report.push(vec![
                funnel.name.clone().into(),
                Cell::Int(index as i64 + 1),
                event.clone().into(),
                reached[index].into(),
                Cell::ratio(reached[index] as f64, previous as f64),
                Cell::ratio(reached[index] as f64, reached[0] as f64),
            ]);
        }
    }
    Ok(report)
}

/// With `user`: that user's sessions, newest first. Without: sessions
/// started per period, how many have ended and their mean duration.
pub fn sessions(source: &Source<'_>, query: &ReportQuery) -> Result<Report, AnalyticsError> {
    let (from, to) = range(query, source.today)?;
    let Some(user) = &query.user else {
        let mut report = source.report(
            ReportName::Sessions,
            &[
                "period",
                "sessions_started",
                "sessions_ended",
                "mean_duration_seconds",
            ],
        );
        let granularity = query.granularity.unwrap_or_default();
        let periods = periods(granularity, from, to)?;
        // One pass over the range's days, summed into their periods.
        let mut by_period: HashMap<String, [i64; 3]> = HashMap::new();
        for entry in source.scan_days(&key("se", &[]), from, to) {
            let (parts, values) = entry?;
            let Some(date) = parts.first().and_then(|day| day.parse::<Date>().ok()) else {
                continue;
            };
            let period = match granularity {
                Granularity::Week => keys::week(date),
                Granularity::Month => keys::month(date),
                _ => keys::day(date),
            };
            let totals = by_period.entry(period).or_default();
            for (index, total) in totals.iter_mut().enumerate() {
                *total = total.saturating_add(at(&values, index));
            }
        }
        for (_, period) in periods.into_iter().take(query.limit()) {
            let totals = by_period.get(&period).copied().unwrap_or_default();
            report.push(vec![
                period.into(),
                totals[sessions::STARTED].into(),
                totals[sessions::ENDED].into(),
                Cell::ratio(
                    totals[sessions::DURATION_MS] as f64 / 1000.0,
                    totals[sessions::ENDED] as f64,
                ),
            ]);
        }
        return Ok(report);
    };
    let actor = user_actor(user);
    let mut report = source.report(
        ReportName::Sessions,
        &[
            "user",
            "session",
            "start",
            "end",
            "end_reason",
            "duration_seconds",
            "events",
        ],
    );
    let timeout = super::config::span(source.config.session_timeout);
    let mut rows: Vec<SessionRecord> = Vec::new();
    if let Some(open) = source
        .actor(&actor)?
        .and_then(|state| state.detail.open_session)
    {
        // Not swept yet, but over: shown as it will be recorded.
        let stale = source.now.duration_since(open.last) > timeout;
        rows.push(SessionRecord {
            key: open.key,
            start: open.start,
            end: open.last,
            end_reason: if stale {
                "inactivity".to_owned()
            } else {
                "open".to_owned()
            },
            events: open.events,
        });
    }
    for (_, bytes) in source.rows(&key("ax", &[&actor]))?.into_iter().rev() {
        rows.push(
            serde_json::from_slice(&bytes)
                .map_err(|error| AnalyticsError::Corrupt(error.to_string()))?,
        );
    }
    let in_range = |record: &SessionRecord| {
        let day = keys::utc_date(record.start);
        day >= from && day <= to
    };
    for record in rows.into_iter().filter(in_range).take(query.limit()) {
        let open = record.end_reason == "open";
        report.push(vec![
            user.clone().into(),
            record.key.into(),
            Cell::Time(record.start),
            if open {
                Cell::Null
            } else {
                Cell::Time(record.end)
            },
            record.end_reason.into(),
            if open {
                Cell::Null
            } else {
                Cell::Float(record.end.duration_since(record.start).as_secs_f64())
            },
            record.events.into(),
        ]);
    }
    Ok(report)
}

/// Per actor (all time): sessions, time spent, active days, events, the
/// three features used most. With `user`, that user only.
pub fn users(source: &Source<'_>, query: &ReportQuery) -> Result<Report, AnalyticsError> {
    let mut report = source.report(
        ReportName::Users,
        &[
            "user",
            "events",
            "sessions",
            "time_spent_seconds",
            "active_days",
            "first_seen",
            "last_seen",
            "top_features",
        ],
    );
    // (actor, engagement counters, the rest of the record if read yet)
    let mut rows: Vec<(String, Vec<i64>, Option<ActorDetail>)> = Vec::new();
    match &query.user {
        Some(user) => {
            let actor = user_actor(user);
            if let Some(state) = source.actor(&actor)? {
                rows.push((actor, state.profile, Some(state.detail)));
            }
        }
        None => {
            // Ranked by the counters at the head of each record, without
            // decoding the rest.
            for (record_key, bytes) in source.rows(&key("a", &[]))? {
                let actor = parts(&record_key).pop().unwrap_or_default();
                rows.push((actor, ActorState::decode_profile(&bytes)?, None));
            }
            rows.sort_by(|(a_actor, a, _), (b_actor, b, _)| {
                at(b, profile::EVENTS)
                    .cmp(&at(a, profile::EVENTS))
                    .then(a_actor.cmp(b_actor))
            });
        }
    }
    for (actor, values, detail) in rows.into_iter().take(query.limit()) {
        let detail = match detail {
            Some(detail) => detail,
            None => source
                .actor(&actor)?
                .map(|state| state.detail)
                .unwrap_or_default(),
        };
        // Features: the `feature` property where events had one, else
        // the event's name (see `activity::count_activity`).
        let mut by_feature: HashMap<String, i64> = HashMap::new();
        for (name, [count, with_feature]) in detail.events {
            if count > with_feature {
                *by_feature.entry(name).or_default() += count - with_feature;
            }
        }
        for (feature, count) in detail.features {
            *by_feature.entry(feature).or_default() += count;
        }
        let mut features: Vec<(String, i64)> = by_feature.into_iter().collect();
        features.sort_by(|(a_name, a), (b_name, b)| b.cmp(a).then(a_name.cmp(b_name)));
        let top: Vec<String> = features
            .iter()
            .take(3)
            .map(|(name, count)| format!("{name} ({count})"))
            .collect();
        let time = |index: usize| {
            jiff::Timestamp::from_millisecond(at(&values, index)).map_or(Cell::Null, Cell::Time)
        };
        report.push(vec![
            display_actor(&actor).into(),
            at(&values, profile::EVENTS).into(),
            at(&values, profile::SESSIONS).into(),
            Cell::Float(at(&values, profile::TIME_SPENT_MS) as f64 / 1000.0),
            at(&values, profile::ACTIVE_DAYS).into(),
            time(profile::FIRST_SEEN_MS),
            time(profile::LAST_SEEN_MS),
            top.join("; ").into(),
        ]);
    }
    Ok(report)
}

/// A user's events by name (all time), most frequent first.
pub fn user_events(source: &Source<'_>, query: &ReportQuery) -> Result<Report, AnalyticsError> {
    let Some(user) = &query.user else {
        return Err(AnalyticsError::Invalid {
            parameter: "user",
            message: "user_events is per user: name one".to_owned(),
        });
    };
    let actor = user_actor(user);
    let mut counts: Vec<(String, i64)> = source
        .actor(&actor)?
        .map(|state| state.detail.events)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, [count, _])| (name, count))
        .collect();
    counts.sort_by(|(a_name, a), (b_name, b)| b.cmp(a).then(a_name.cmp(b_name)));
    let mut report = source.report(ReportName::UserEvents, &["user", "event", "count"]);
    for (event, count) in counts.into_iter().take(query.limit()) {
        report.push(vec![user.clone().into(), event.into(), count.into()]);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> Date {
        text.parse().unwrap()
    }

    #[test]
    fn buckets_cover_a_range_exactly_once() {
        let covered = buckets(date("2026-10-24"), date("2026-12-03"));
        let tags: Vec<String> = covered
            .iter()
            .map(|(tag, period)| format!("{tag}:{period}"))
            .collect();
        let mut expected: Vec<String> = (24..=31).map(|day| format!("d:2026-10-{day}")).collect();
        expected.extend(
            ["m:2026-11", "d:2026-12-01", "d:2026-12-02", "d:2026-12-03"].map(String::from),
        );
        assert_eq!(tags, expected);
        let covered = buckets(date("2026-11-10"), date("2026-11-29"));
        let tags: Vec<String> = covered
            .iter()
            .map(|(tag, period)| format!("{tag}:{period}"))
            .collect();
        assert_eq!(
            tags,
            [
                "d:2026-11-10",
                "d:2026-11-11",
                "d:2026-11-12",
                "d:2026-11-13",
                "d:2026-11-14",
                "d:2026-11-15",
                "w:2026-W47",
                "w:2026-W48"
            ]
        );
    }

    #[test]
    fn bad_range_names_from() {
        let query = ReportQuery {
            from: Some(date("2026-02-01")),
            to: Some(date("2026-01-01")),
            ..ReportQuery::default()
        };
        assert!(matches!(
            range(&query, date("2026-03-01")),
            Err(AnalyticsError::Invalid {
                parameter: "from",
                ..
            })
        ));
    }
}
