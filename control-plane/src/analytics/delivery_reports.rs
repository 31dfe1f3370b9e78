//! The delivery, template, cost, outcome and channel reports, read from
//! the delivery rollups (`dh`, `dd`, `td`, `adl`, `o`; see `layout`).
//!
//! Rates: delivery = delivered / sent; read = (opened + read) / delivered;
//! click = clicked / delivered; failure = (failed + bounced + dead
//! lettered) / (sent + failed before sending + dead lettered);
//! conversion = attributed outcomes / sent. Cost per conversion = cost /
//! conversions; return on cost = revenue / cost.

use std::collections::BTreeMap;

use super::config::provider_of;
use super::keys::{self, key, user_actor};
use super::layout::delivery::{self as d, Time};
use super::reports::{Source, range};
use super::{AnalyticsError, Cell, Granularity, Money, Report, ReportName, ReportQuery};
use crate::channels::ChannelKind;

/// Summed delivery counters per group.
type Groups = BTreeMap<Vec<String>, Vec<i64>>;

fn add_into(groups: &mut Groups, group: Vec<String>, values: &[i64]) {
    let sum = groups.entry(group).or_insert_with(|| vec![0; d::LEN]);
    for (index, value) in values.iter().enumerate().take(d::LEN) {
        // Rollups saturate; so do sums of them.
        sum[index] = sum[index].saturating_add(*value);
    }
}

fn at(values: &[i64], index: usize) -> i64 {
    values.get(index).copied().unwrap_or(0)
}

/// Whether a `type`/`channel` pair passes the query's filters.
fn wanted(query: &ReportQuery, kind: &str, channel: &str) -> bool {
    query
        .notification_type
        .as_ref()
        .is_none_or(|wanted| wanted == kind)
        && query
            .channel
            .is_none_or(|wanted| wanted.as_str() == channel)
}

/// Reads day (or hour) cohorts of the range, grouped by `group_of`
/// (given the period, type and channel) after the filters.
fn collect(
    source: &Source<'_>,
    query: &ReportQuery,
    hourly: bool,
    group_of: impl Fn(&str, &str, &str) -> Vec<String>,
) -> Result<Groups, AnalyticsError> {
    let (from, to) = range(query, source.today)?;
    let mut groups = Groups::new();
    let (family, actor) = match &query.user {
        Some(_) if hourly => {
            return Err(AnalyticsError::Invalid {
                parameter: "granularity",
                message:
                    "per-user delivery figures are kept per day: use day, week, month or total"
                        .to_owned(),
            });
        }
        Some(user) => ("adl", Some(user_actor(user))),
        None if hourly => ("dh", None),
        None => ("dd", None),
    };
    let head = match &actor {
        Some(actor) => key(family, &[actor]),
        None => key(family, &[]),
    };
    for entry in source.scan_days(&head, from, to) {
        let (parts, values) = entry?;
        let [.., period, kind, channel] = parts.as_slice() else {
            continue;
        };
        if wanted(query, kind, channel) {
            add_into(&mut groups, group_of(period, kind, channel), &values);
        }
    }
    Ok(groups)
}

/// The period a cohort day or hour belongs to at `granularity`.
fn period_of(granularity: Granularity, period: &str) -> String {
    let date = period
        .get(..10)
        .and_then(|day| day.parse::<jiff::civil::Date>().ok());
    match (granularity, date) {
        (Granularity::Hour, _) => period.to_owned(),
        (Granularity::Day, Some(date)) => keys::day(date),
        (Granularity::Week, Some(date)) => keys::week(date),
        (Granularity::Month, Some(date)) => keys::month(date),
        (Granularity::Total, _) => "total".to_owned(),
        (_, None) => period.to_owned(),
    }
}

fn failures(values: &[i64]) -> (i64, i64) {
    let failed = at(values, d::FAILED) + at(values, d::BOUNCED) + at(values, d::DEAD_LETTERED);
    let attempted =
        at(values, d::SENT) + at(values, d::FAILED_UNSENT) + at(values, d::DEAD_LETTERED);
    (failed, attempted)
}

fn reads(values: &[i64]) -> i64 {
    at(values, d::OPENED) + at(values, d::READ)
}

fn time_cells(values: &[i64], time: Time) -> [Cell; 2] {
    match d::time_stats(values, time) {
        Some((mean, p95)) => [Cell::Float(mean), Cell::Float(p95)],
        None => [Cell::Null, Cell::Null],
    }
}

pub fn delivery(source: &Source<'_>, query: &ReportQuery) -> Result<Report, AnalyticsError> {
    let granularity = query.granularity.unwrap_or_default();
    let hourly = granularity == Granularity::Hour;
    let groups = collect(source, query, hourly, |period, kind, channel| {
        vec![
            period_of(granularity, period),
            kind.to_owned(),
            channel.to_owned(),
        ]
    })?;
    let mut report = source.report(
        ReportName::Delivery,
        &[
            "period",
            "type",
            "channel",
            "sent",
            "delivered",
            "opened",
            "read",
            "clicked",
            "failed",
            "bounced",
            "dead_lettered",
            "retries",
            "complaints",
            "delivery_rate",
            "read_rate",
            "click_rate",
            "failure_rate",
            "mean_seconds_to_deliver",
            "p95_seconds_to_deliver",
            "mean_seconds_to_read",
            "p95_seconds_to_read",
            "mean_seconds_to_click",
            "p95_seconds_to_click",
            "cost",
            "conversions",
            "revenue",
        ],
    );
    for (group, values) in groups.into_iter().take(query.limit()) {
        let count = |index: usize| Cell::Int(at(&values, index));
        let (failed, attempted) = failures(&values);
        let delivered = at(&values, d::DELIVERED) as f64;
        let mut row: Vec<Cell> = group.into_iter().map(Cell::Text).collect();
        row.extend([
            count(d::SENT),
            count(d::DELIVERED),
            count(d::OPENED),
            count(d::READ),
            count(d::CLICKED),
            count(d::FAILED),
            count(d::BOUNCED),
            count(d::DEAD_LETTERED),
            count(d::RETRIED),
            count(d::COMPLAINED),
            Cell::ratio(delivered, at(&values, d::SENT) as f64),
            Cell::ratio(reads(&values) as f64, delivered),
            Cell::ratio(at(&values, d::CLICKED) as f64, delivered),
            Cell::ratio(failed as f64, attempted as f64),
        ]);
        row.extend(time_cells(&values, Time::Deliver));
        row.extend(time_cells(&values, Time::Read));
        row.extend(time_cells(&values, Time::Click));
        row.extend([
            Cell::Money(Money(at(&values, d::COST))),
            count(d::CONVERSIONS),
            Cell::Money(Money(at(&values, d::REVENUE))),
        ]);
        report.push(row);
    }
    Ok(report)
}

pub fn templates(source: &Source<'_>, query: &ReportQuery) -> Result<Report, AnalyticsError> {
    if query.user.is_some() {
        return Err(AnalyticsError::Invalid {
            parameter: "user",
            message: "templates are reported for everyone; use the delivery report for one user"
                .to_owned(),
        });
    }
    let (from, to) = range(query, source.today)?;
    let mut groups = Groups::new();
    for entry in source.scan_days(&key("td", &[]), from, to) {
        let (parts, values) = entry?;
        let [_, template, kind, channel] = parts.as_slice() else {
            continue;
        };
        if wanted(query, kind, channel) {
            add_into(
                &mut groups,
                vec![template.clone(), kind.clone(), channel.clone()],
                &values,
            );
        }
    }
    let mut report = source.report(
        ReportName::Templates,
        &[
            "template",
            "type",
            "channel",
            "sent",
            "delivered",
            "read",
            "clicked",
            "delivery_rate",
            "read_rate",
            "click_rate",
            "conversions",
            "conversion_rate",
            "revenue",
            "cost",
        ],
    );
    for (group, values) in groups.into_iter().take(query.limit()) {
        let sent = at(&values, d::SENT) as f64;
        let delivered = at(&values, d::DELIVERED) as f64;
        let mut row: Vec<Cell> = group.into_iter().map(Cell::Text).collect();
        row.extend([
            Cell::Int(at(&values, d::SENT)),
            Cell::Int(at(&values, d::DELIVERED)),
            Cell::Int(reads(&values)),
            Cell::Int(at(&values, d::CLICKED)),
            Cell::ratio(delivered, sent),
            Cell::ratio(reads(&values) as f64, delivered),
            Cell::ratio(at(&values, d::CLICKED) as f64, delivered),
            Cell::Int(at(&values, d::CONVERSIONS)),
            Cell::ratio(at(&values, d::CONVERSIONS) as f64, sent),
            Cell::Money(Money(at(&values, d::REVENUE))),
            Cell::Money(Money(at(&values, d::COST))),
        ]);
        report.push(row);
    }
    Ok(report)
}

pub fn costs(source: &Source<'_>, query: &ReportQuery) -> Result<Report, AnalyticsError> {
    let granularity = query.granularity.unwrap_or_default();
    let hourly = granularity == Granularity::Hour;
    let groups = collect(source, query, hourly, |period, kind, channel| {
        let provider = ChannelKind::parse(channel).map_or("", provider_of);
        vec![
            period_of(granularity, period),
            kind.to_owned(),
            channel.to_owned(),
            provider.to_owned(),
        ]
    })?;
    let mut report = source.report(
        ReportName::Costs,
        &[
            "period",
            "type",
            "channel",
            "provider",
            "messages",
            "cost",
            "cost_per_message",
            "conversions",
            "cost_per_conversion",
            "revenue",
        ],
    );
    for (group, values) in groups.into_iter().take(query.limit()) {
        let cost = Money(at(&values, d::COST));
        let mut row: Vec<Cell> = group.into_iter().map(Cell::Text).collect();
        row.extend([
            Cell::Int(at(&values, d::SENT)),
            Cell::Money(cost),
            per(cost, at(&values, d::SENT)),
            Cell::Int(at(&values, d::CONVERSIONS)),
            per(cost, at(&values, d::CONVERSIONS)),
            Cell::Money(Money(at(&values, d::REVENUE))),
        ]);
        report.push(row);
    }
    Ok(report)
}

/// `cost / count` as money (rounded to the micro-unit), `Null` over zero.
fn per(cost: Money, count: i64) -> Cell {
    if count == 0 {
        Cell::Null
    } else {
        Cell::Money(Money((cost.micros() as f64 / count as f64).round() as i64))
    }
}

pub fn outcomes(source: &Source<'_>, query: &ReportQuery) -> Result<Report, AnalyticsError> {
    if query.user.is_some() {
        return Err(AnalyticsError::Invalid {
            parameter: "user",
            message: "outcomes are reported for everyone; use the delivery report for one user's conversions"
                .to_owned(),
        });
    }
    let (from, to) = range(query, source.today)?;
    let granularity = query.granularity.unwrap_or_default();
    if granularity == Granularity::Hour {
        return Err(AnalyticsError::Invalid {
            parameter: "granularity",
            message: "outcomes are kept per day".to_owned(),
        });
    }
    let mut groups: BTreeMap<Vec<String>, (i64, i64)> = BTreeMap::new();
    for entry in source.scan_days(&key("o", &[]), from, to) {
        let (parts, values) = entry?;
        let [day, outcome, kind, channel, template] = parts.as_slice() else {
            continue;
        };
        let attributed = !kind.is_empty();
        let filtered = query.notification_type.is_some() || query.channel.is_some();
        if (filtered && !attributed) || !wanted(query, kind, channel) {
            continue;
        }
        let group = vec![
            period_of(granularity, day),
            outcome.clone(),
            kind.clone(),
            channel.clone(),
            template.clone(),
        ];
        let sum = groups.entry(group).or_default();
        sum.0 = sum.0.saturating_add(at(&values, 0));
        sum.1 = sum.1.saturating_add(at(&values, 1));
    }
    let mut report = source.report(
        ReportName::Outcomes,
        &[
            "period",
            "outcome",
            "attributed",
            "type",
            "channel",
            "template",
            "count",
            "amount",
        ],
    );
    for (group, (count, amount)) in groups.into_iter().take(query.limit()) {
        let [period, outcome, kind, channel, template]: [String; 5] = match group.try_into() {
            Ok(group) => group,
            Err(_) => continue,
        };
        let attributed = !kind.is_empty();
        let optional = |text: String| {
            if text.is_empty() {
                Cell::Null
            } else {
                Cell::Text(text)
            }
        };
        report.push(vec![
            period.into(),
            outcome.into(),
            Cell::Text(attributed.to_string()),
            optional(kind),
            optional(channel),
            optional(template),
            count.into(),
            Cell::Money(Money(amount)),
        ]);
    }
    Ok(report)
}

/// Channels ranked by conversions per message sent, then click rate,
/// then read rate.
pub fn channels(source: &Source<'_>, query: &ReportQuery) -> Result<Report, AnalyticsError> {
    let groups = collect(source, query, false, |_, _, channel| {
        vec![channel.to_owned()]
    })?;
    let rate = |numerator: i64, denominator: i64| {
        if denominator == 0 {
            -1.0
        } else {
            numerator as f64 / denominator as f64
        }
    };
    let mut ranked: Vec<(String, Vec<i64>)> = groups
        .into_iter()
        .map(|(mut group, values)| (group.pop().unwrap_or_default(), values))
        .collect();
    let score = |values: &[i64]| {
        let delivered = at(values, d::DELIVERED);
        (
            rate(at(values, d::CONVERSIONS), at(values, d::SENT)),
            rate(at(values, d::CLICKED), delivered),
            rate(reads(values), delivered),
        )
    };
    ranked.sort_by(|(a_name, a), (b_name, b)| {
        score(b)
            .partial_cmp(&score(a))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a_name.cmp(b_name))
    });
    let mut report = source.report(
        ReportName::Channels,
        &[
            "rank",
            "channel",
            "sent",
            "delivered",
            "read_rate",
            "click_rate",
            "conversions",
            "conversion_rate",
            "revenue",
            "cost",
            "cost_per_conversion",
            "revenue_per_message",
            "return_on_cost",
        ],
    );
    for (rank, (channel, values)) in ranked.into_iter().take(query.limit()).enumerate() {
        let sent = at(&values, d::SENT);
        let delivered = at(&values, d::DELIVERED) as f64;
        let cost = Money(at(&values, d::COST));
        let revenue = Money(at(&values, d::REVENUE));
        report.push(vec![
            Cell::Int(rank as i64 + 1),
            channel.into(),
            Cell::Int(sent),
            Cell::Int(at(&values, d::DELIVERED)),
            Cell::ratio(reads(&values) as f64, delivered),
            Cell::ratio(at(&values, d::CLICKED) as f64, delivered),
            Cell::Int(at(&values, d::CONVERSIONS)),
            Cell::ratio(at(&values, d::CONVERSIONS) as f64, sent as f64),
            Cell::Money(revenue),
            Cell::Money(cost),
            per(cost, at(&values, d::CONVERSIONS)),
            per(revenue, sent),
            Cell::ratio(revenue.micros() as f64, cost.micros() as f64),
        ]);
    }
    Ok(report)
}
