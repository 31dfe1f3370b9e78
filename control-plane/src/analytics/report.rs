//! What an analytics query asks ([`ReportQuery`]) and what it answers
//! ([`Report`]): a table with named columns, the one shape that the admin
//! HTTP API renders as JSON or CSV and the gRPC API sends as rows, so the
//! three never disagree on a figure.
//!
//! Rates are fractions in 0..=1 (`null` when the denominator is zero,
//! never a division by zero shown as 0); durations are seconds; money is a
//! decimal string in the configured currency (see [`super::Money`]).

use jiff::Timestamp;
use jiff::civil::Date;
use serde::Serialize;

use super::Money;
use crate::channels::ChannelKind;

/// The reports there are. Names are the API's (`/v1/admin/analytics/{name}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ReportName, description = "The report's name.")]
pub enum ReportName {
    /// Events, unique users and unique sessions per day, week or month.
    Summary,
    /// Per resource: counts of the standard actions and their conversion
    /// rates (view→click, click→cart, cart→purchase).
    Resources,
    /// Per resource and event name: every action's count.
    ResourceActions,
    /// Each configured funnel's steps: users reaching them, conversion.
    Funnels,
    /// Sessions: start, end (explicit or by inactivity), duration.
    Sessions,
    /// Per user (or anonymous visitor): sessions, time spent, active days,
    /// events, the features used most.
    Users,
    /// Per user: events by name.
    UserEvents,
    /// Per period, type and channel: sent, delivered, opened, read,
    /// clicked, failed, bounced, their rates, times to deliver/read/click,
    /// retries, cost.
    Delivery,
    /// Per template (and type, channel): the same delivery figures plus
    /// conversions.
    Templates,
    /// Per day, type, channel and provider: messages, cost, conversions,
    /// cost per conversion.
    Costs,
    /// Financial outcomes per day and outcome name, attributed to the
    /// notification acted on (type, channel, template) or unattributed.
    Outcomes,
    /// Channels ranked by effectiveness.
    Channels,
}

impl ReportName {
    pub const ALL: [ReportName; 12] = [
        ReportName::Summary,
        ReportName::Resources,
        ReportName::ResourceActions,
        ReportName::Funnels,
        ReportName::Sessions,
        ReportName::Users,
        ReportName::UserEvents,
        ReportName::Delivery,
        ReportName::Templates,
        ReportName::Costs,
        ReportName::Outcomes,
        ReportName::Channels,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReportName::Summary => "summary",
            ReportName::Resources => "resources",
            ReportName::ResourceActions => "resource_actions",
            ReportName::Funnels => "funnels",
            ReportName::Sessions => "sessions",
            ReportName::Users => "users",
            ReportName::UserEvents => "user_events",
            ReportName::Delivery => "delivery",
            ReportName::Templates => "templates",
            ReportName::Costs => "costs",
            ReportName::Outcomes => "outcomes",
            ReportName::Channels => "channels",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|name| name.as_str() == text)
    }
}

/// The time buckets of a report's rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    Hour,
    #[default]
    Day,
    /// ISO weeks, starting Monday.
    Week,
    Month,
    /// One row per group for the whole range.
    Total,
}

impl Granularity {
    pub const ALL: [Granularity; 5] = [
        Granularity::Hour,
        Granularity::Day,
        Granularity::Week,
        Granularity::Month,
        Granularity::Total,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Hour => "hour",
            Granularity::Day => "day",
            Granularity::Week => "week",
            Granularity::Month => "month",
            Granularity::Total => "total",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|granularity| granularity.as_str() == text)
    }
}

/// Filters and shape of one query. Every field is optional; a report
/// ignores the filters that do not apply to it (documented per report in
/// the OpenAPI description) and refuses combinations it cannot answer
/// with [`super::AnalyticsError::Invalid`] naming the parameter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportQuery {
    pub report: Option<ReportName>,
    /// First day included (UTC).
    pub from: Option<Date>,
    /// Last day included (UTC).
    pub to: Option<Date>,
    /// A user id (identified users), for per-user reports and filters.
    pub user: Option<String>,
    pub notification_type: Option<String>,
    pub channel: Option<ChannelKind>,
    /// A resource id (resources reports) or funnel name (funnels).
    pub resource: Option<String>,
    pub funnel: Option<String>,
    pub granularity: Option<Granularity>,
    /// Most rows returned (reports that rank or list); default 100,
    /// at most [`MAX_LIMIT`].
    pub limit: Option<usize>,
}

/// The most rows one query returns.
pub const MAX_LIMIT: usize = 10_000;
/// Rows returned when the query does not say.
pub const DEFAULT_LIMIT: usize = 100;

impl ReportQuery {
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT)
    }
}

/// One value in a report.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Int(i64),
    /// A rate or a mean; rendered with up to 6 decimals.
    Float(f64),
    Money(Money),
    Time(Timestamp),
    /// Not applicable (a rate over nothing, a session still open).
    Null,
}

impl Cell {
    /// A ratio, `Null` when `denominator` is zero.
    pub fn ratio(numerator: f64, denominator: f64) -> Cell {
        if denominator == 0.0 {
            Cell::Null
        } else {
            Cell::Float(numerator / denominator)
        }
    }

    /// The text CSV and gRPC carry: integers as they are, floats rounded
    /// to 6 decimals, money as its decimal string, times RFC 3339, null
    /// as the empty string.
    pub fn to_text(&self) -> String {
        match self {
            Cell::Text(text) => text.clone(),
            Cell::Int(value) => value.to_string(),
            Cell::Float(value) => format_float(*value),
            Cell::Money(money) => money.to_string(),
            Cell::Time(at) => at.to_string(),
            Cell::Null => String::new(),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Cell::Text(text) => Value::String(text.clone()),
            Cell::Int(value) => Value::from(*value),
            Cell::Float(value) => serde_json::Number::from_f64((value * 1e6).round() / 1e6)
                .map_or(Value::Null, Value::Number),
            Cell::Money(money) => Value::String(money.to_string()),
            Cell::Time(at) => Value::String(at.to_string()),
            Cell::Null => Value::Null,
        }
    }
}

fn format_float(value: f64) -> String {
    let rounded = (value * 1e6).round() / 1e6;
    let mut text = format!("{rounded:.6}");
    while text.ends_with('0') {
        text.pop();
    }
    if text.ends_with('.') {
        text.pop();
    }
    text
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Cell::Text(text.to_owned())
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Cell::Text(text)
    }
}

impl From<i64> for Cell {
    fn from(value: i64) -> Self {
        Cell::Int(value)
    }
}

impl From<u64> for Cell {
    fn from(value: u64) -> Self {
        Cell::Int(i64::try_from(value).unwrap_or(i64::MAX))
    }
}

impl From<Money> for Cell {
    fn from(money: Money) -> Self {
        Cell::Money(money)
    }
}

impl From<Option<Timestamp>> for Cell {
    fn from(at: Option<Timestamp>) -> Self {
        at.map_or(Cell::Null, Cell::Time)
    }
}

/// A report as a table.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = AnalyticsReport)]
pub struct ReportJson<'a> {
    report: ReportName,
    /// The currency of the money columns (`[analytics] currency`).
    #[schema(value_type = String, example = "USD")]
    currency: &'a str,
    /// The columns, in order (the CSV header).
    #[schema(value_type = Vec<String>)]
    columns: &'a [&'static str],
    // One object per row, keyed by column (described in `row_objects`).
    #[schema(schema_with = row_objects)]
    rows: Vec<serde_json::Map<String, serde_json::Value>>,
}

fn row_objects() -> utoipa::openapi::Array {
    use utoipa::openapi::schema::{
        AdditionalProperties, ArrayBuilder, ObjectBuilder, SchemaType, Type,
    };
    let cell = ObjectBuilder::new().schema_type(SchemaType::from_iter([
        Type::String,
        Type::Number,
        Type::Integer,
        Type::Null,
    ]));
    let row = ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::RefOr(cell.build().into())));
    ArrayBuilder::new()
        .items(row)
        .description(Some(
            "One object per row, keyed by column: integers and rates (up to 6 decimals) \
             as numbers, money and times as strings, `null` when not applicable.",
        ))
        .build()
}

/// A report: named columns, rows of cells in column order.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub name: ReportName,
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<Cell>>,
    /// The configured currency of the money columns (e.g. "USD").
    pub currency: String,
}

impl Report {
    pub fn new(name: ReportName, columns: &[&'static str], currency: &str) -> Self {
        Report {
            name,
            columns: columns.to_vec(),
            rows: Vec::new(),
            currency: currency.to_owned(),
        }
    }

    /// Appends a row; panics in debug builds when its width is wrong (a
    /// programming error, caught by every report's tests).
    pub fn push(&mut self, row: Vec<Cell>) {
        debug_assert_eq!(row.len(), self.columns.len(), "{:?} row width", self.name);
        self.rows.push(row);
    }

    /// The value of `column` in row `row`, for tests and callers that
    /// read one figure.
    pub fn cell(&self, row: usize, column: &str) -> Option<&Cell> {
        let index = self.columns.iter().position(|name| *name == column)?;
        self.rows.get(row)?.get(index)
    }

    /// The report as the JSON API answers it: each row an object keyed by
    /// column.
    pub fn as_json(&self) -> ReportJson<'_> {
        let rows = self
            .rows
            .iter()
            .map(|row| {
                self.columns
                    .iter()
                    .zip(row)
                    .map(|(column, cell)| ((*column).to_owned(), cell.to_json()))
                    .collect()
            })
            .collect();
        ReportJson {
            report: self.name,
            currency: &self.currency,
            columns: &self.columns,
            rows,
        }
    }

    /// [`Report::as_json`] as a JSON value.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.as_json()).expect("a report always serializes")
    }

    /// RFC 4180 CSV with a header row; text cells go through
    /// [`crate::csv::field`] (quoted, formulas defused), numbers as they
    /// are.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        let header: Vec<String> = self
            .columns
            .iter()
            .map(|column| crate::csv::field(column))
            .collect();
        out.push_str(&header.join(","));
        out.push_str("\r\n");
        for row in &self.rows {
            let fields: Vec<String> = row
                .iter()
                .map(|cell| match cell {
                    Cell::Text(text) => crate::csv::field(text),
                    other => other.to_text(),
                })
                .collect();
            out.push_str(&fields.join(","));
            out.push_str("\r\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in ReportName::ALL {
            assert_eq!(ReportName::parse(name.as_str()), Some(name));
        }
        for granularity in Granularity::ALL {
            assert_eq!(Granularity::parse(granularity.as_str()), Some(granularity));
        }
    }

    #[test]
    fn renders_json_and_csv_alike() {
        let mut report = Report::new(ReportName::Costs, &["channel", "rate", "cost", "n"], "USD");
        report.push(vec![
            "=sms,x".into(),
            Cell::ratio(1.0, 3.0),
            Cell::Money(Money(7_900)),
            Cell::Int(3),
        ]);
        report.push(vec![
            "email".into(),
            Cell::ratio(1.0, 0.0),
            Cell::Money(Money(0)),
            Cell::Int(0),
        ]);
        assert_eq!(
            report.to_csv(),
            "channel,rate,cost,n\r\n\"'=sms,x\",0.333333,0.0079,3\r\nemail,,0.00,0\r\n"
        );
        let json = report.to_json();
        assert_eq!(json["rows"][0]["rate"], serde_json::json!(0.333333));
        assert_eq!(json["rows"][0]["cost"], "0.0079");
        assert_eq!(json["rows"][1]["rate"], serde_json::Value::Null);
        assert_eq!(json["report"], "costs");
        assert_eq!(report.cell(0, "n"), Some(&Cell::Int(3)));
    }
}
