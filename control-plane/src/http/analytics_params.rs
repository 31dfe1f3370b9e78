//! The parameters of an analytics report, as the admin HTTP API's query
//! string and the gRPC `nudge.v1.Analytics/GetReport` request both carry
//! them: strings turned into one [`ReportQuery`] by [`parse`], the single
//! place they are checked, so the two APIs accept and refuse alike.
//!
//! # Promises
//!
//! * **Every refusal names its parameter**: [`ParamError::Invalid`]'s
//!   message starts with the parameter's name (`from: …`), which is also
//!   the proto field's name; an unknown report is [`ParamError::UnknownReport`]
//!   (404 / NOT_FOUND) and lists the reports there are.
//! * **Strict values**: dates are exactly `YYYY-MM-DD` (UTC days, both ends
//!   included) with `from` not after `to`; channels, granularities and
//!   formats are their API names; `limit` is 1..=[`MAX_LIMIT`]; ids are at
//!   most [`MAX_PARAM_CHARS`] without NUL. A parameter given twice or one
//!   this API does not know is refused, never ignored.
//! * **Empty means unset**, as in the proto: `?user=` asks for no user
//!   filter.

use jiff::civil::Date;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{
    AnyOfBuilder, KnownFormat, Object, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr};

use super::openapi::{parameter, string_enum};
use crate::analytics::{DEFAULT_LIMIT, Granularity, MAX_LIMIT, ReportName, ReportQuery};
use crate::channels::ChannelKind;

/// The query parameters there are, in the order the docs list them.
pub const PARAMETERS: [&str; 10] = [
    "from",
    "to",
    "user",
    "type",
    "channel",
    "resource",
    "funnel",
    "granularity",
    "limit",
    "format",
];

/// Longest id accepted in `user`, `type`, `resource` and `funnel`.
pub const MAX_PARAM_CHARS: usize = 1024;

/// How the report is answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Json,
    Csv,
}

/// A query and how to render it.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// `report` is always `Some`.
    pub query: ReportQuery,
    pub format: Format,
}

impl Params {
    /// `nudge-<report>-<from>-<to>.csv`; a bound that was not given is
    /// left out of the name.
    pub fn csv_file_name(&self) -> String {
        let mut name = String::from("nudge");
        if let Some(report) = self.query.report {
            name.push('-');
            name.push_str(report.as_str());
        }
        for date in [self.query.from, self.query.to].into_iter().flatten() {
            name.push('-');
            name.push_str(&date.to_string());
        }
        name.push_str(".csv");
        name
    }
}

/// Why the parameters were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("unknown report {0:?}; use one of {list}", list = report_list())]
    UnknownReport(String),
    /// The message starts with `parameter`.
    #[error("{parameter}: {message}")]
    Invalid { parameter: String, message: String },
}

impl ParamError {
    fn invalid(parameter: &str, message: impl Into<String>) -> Self {
        ParamError::Invalid {
            parameter: parameter.to_owned(),
            message: message.into(),
        }
    }
}

/// `summary, resources, …`: every report's name.
pub fn report_list() -> String {
    ReportName::ALL
        .iter()
        .map(|name| name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Turns the report's name and its `(parameter, value)` pairs into a
/// query. Empty values are skipped (unset).
pub fn parse<'a>(
    report: &str,
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Params, ParamError> {
    let name =
        ReportName::parse(report).ok_or_else(|| ParamError::UnknownReport(report.to_owned()))?;
    let mut query = ReportQuery {
        report: Some(name),
        ..ReportQuery::default()
    };
    let mut format = Format::default();
    let mut seen: Vec<&str> = Vec::new();
    for (parameter, value) in pairs {
        let Some(known) = PARAMETERS.iter().copied().find(|known| *known == parameter) else {
            return Err(ParamError::invalid(
                parameter,
                format!("unknown parameter; use {}", PARAMETERS.join(", ")),
            ));
        };
        if seen.contains(&known) {
            return Err(ParamError::invalid(known, "given more than once"));
        }
        seen.push(known);
        if value.is_empty() {
            continue;
        }
        match known {
            "from" => query.from = Some(date(known, value)?),
            "to" => query.to = Some(date(known, value)?),
            "user" => query.user = Some(id(known, value)?),
            "type" => query.notification_type = Some(id(known, value)?),
            "resource" => query.resource = Some(id(known, value)?),
            "funnel" => query.funnel = Some(id(known, value)?),
            "channel" => {
                query.channel = Some(ChannelKind::parse(value).ok_or_else(|| {
                    let known: Vec<&str> = ChannelKind::ALL.iter().map(|c| c.as_str()).collect();
                    ParamError::invalid(
                        "channel",
                        format!("unknown channel {value:?}; use one of {}", known.join(", ")),
                    )
                })?);
            }
            "granularity" => {
                query.granularity = Some(Granularity::parse(value).ok_or_else(|| {
                    let known: Vec<&str> = Granularity::ALL.iter().map(|g| g.as_str()).collect();
                    ParamError::invalid(
                        "granularity",
                        format!(
                            "unknown granularity {value:?}; use one of {}",
                            known.join(", ")
                        ),
                    )
                })?);
            }
            "limit" => query.limit = Some(limit(value)?),
            "format" => {
                format = match value {
                    "json" => Format::Json,
                    "csv" => Format::Csv,
                    _ => {
                        return Err(ParamError::invalid(
                            "format",
                            format!("unknown format {value:?}; use json or csv"),
                        ));
                    }
                };
            }
            _ => unreachable!("every parameter in PARAMETERS is handled"),
        }
    }
    if let (Some(from), Some(to)) = (query.from, query.to)
        && from > to
    {
        return Err(ParamError::invalid(
            "from",
            format!("{from} is after to ({to})"),
        ));
    }
    Ok(Params { query, format })
}

/// Exactly `YYYY-MM-DD`, a real day.
fn date(parameter: &str, value: &str) -> Result<Date, ParamError> {
    let shaped = value.len() == 10
        && value.bytes().enumerate().all(|(at, byte)| match at {
            4 | 7 => byte == b'-',
            _ => byte.is_ascii_digit(),
        });
    let parsed = shaped.then(|| value.parse::<Date>().ok()).flatten();
    parsed.ok_or_else(|| {
        ParamError::invalid(parameter, format!("{value:?} is not a day as YYYY-MM-DD"))
    })
}

fn id(parameter: &str, value: &str) -> Result<String, ParamError> {
    // Characters, as the OpenAPI document's `maxLength` counts them.
    if value.chars().count() > MAX_PARAM_CHARS {
        return Err(ParamError::invalid(
            parameter,
            format!("is longer than {MAX_PARAM_CHARS} characters"),
        ));
    }
    if value.contains('\0') {
        return Err(ParamError::invalid(parameter, "contains a NUL character"));
    }
    Ok(value.to_owned())
}

fn limit(value: &str) -> Result<usize, ParamError> {
    match value.parse::<usize>() {
        Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
        _ => Err(ParamError::invalid(
            "limit",
            format!("{value:?} is not an integer from 1 to {MAX_LIMIT}"),
        )),
    }
}

/// The report route's parameters for its `#[utoipa::path]`: the path's
/// `report` and the query's [`PARAMETERS`], in that order. Built by hand
/// from the same constants [`parse`] enforces (report names, channels,
/// granularities, [`MAX_PARAM_CHARS`], [`MAX_LIMIT`]); the query is read
/// by hand so that each refusal names its parameter.
pub(crate) struct ReportParams;

impl utoipa::IntoParams for ReportParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let reports = ReportName::ALL.map(ReportName::as_str);
        let granularities = Granularity::ALL.map(Granularity::as_str);
        let report = parameter(
            "report",
            ParameterIn::Path,
            "The report.",
            string_enum(reports),
        )
        .example(Some("summary".into()))
        .build();
        let query = |name: &str, description: &str, schema: RefOr<Schema>| {
            parameter(name, ParameterIn::Query, description, schema).build()
        };
        let id = || -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(MAX_PARAM_CHARS))
                .pattern(Some(super::openapi::NO_NUL))
                .into()
        };
        // A day, or empty (unset): `anyOf` because `format: date` alone
        // would make a fuzzer's empty value invalid.
        let day = || -> RefOr<Schema> {
            AnyOfBuilder::new()
                .schema_type(Type::String)
                // `AnyValue`: a builder's default `type: object` would
                // make both branches refuse every string.
                .item(
                    ObjectBuilder::new()
                        .schema_type(SchemaType::AnyValue)
                        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Date))),
                )
                .item(
                    ObjectBuilder::new()
                        .schema_type(SchemaType::AnyValue)
                        .max_length(Some(0)),
                )
                .into()
        };
        let limit: RefOr<Schema> = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(MAX_LIMIT as f64))
            .default(Some(DEFAULT_LIMIT.into()))
            .into();
        let parameters = [
            ("from", DESC_FROM, day()),
            ("to", DESC_TO, day()),
            ("user", DESC_USER, id()),
            ("type", DESC_TYPE, id()),
            (
                "channel",
                DESC_CHANNEL,
                Ref::from_schema_name("Channel").into(),
            ),
            ("resource", DESC_RESOURCE, id()),
            ("funnel", DESC_FUNNEL, id()),
            (
                "granularity",
                DESC_GRANULARITY,
                with_default(string_enum(granularities), "day"),
            ),
            ("limit", DESC_LIMIT, limit),
            (
                "format",
                DESC_FORMAT,
                with_default(string_enum(["json", "csv"]), "json"),
            ),
        ];
        std::iter::once(report)
            .chain(
                parameters
                    .into_iter()
                    .map(|(name, description, schema)| query(name, description, schema)),
            )
            .collect()
    }
}

fn with_default(mut schema: Object, default: &str) -> RefOr<Schema> {
    schema.default = Some(default.into());
    schema.into()
}

const DESC_FROM: &str = "First UTC day included (`YYYY-MM-DD`); not after `to`, and less than 36,525 days (a century) before it (else a 400 naming `from`). Empty is the same as absent.";
const DESC_TO: &str = "Last UTC day included (`YYYY-MM-DD`). Empty is the same as absent.";
const DESC_USER: &str = "A user id: the per-user reports' user, or a filter. At most 1024 characters, no NUL; empty is the same as absent.";
const DESC_TYPE: &str = "Only this notification type (delivery reports). At most 1024 characters, no NUL; empty is the same as absent.";
const DESC_CHANNEL: &str = "Only this channel (delivery reports).";
const DESC_RESOURCE: &str = "Only this resource id (`resources`, `resource_actions`). At most 1024 characters, no NUL; empty is the same as absent.";
const DESC_FUNNEL: &str = "Only this configured funnel (`funnels`). At most 1024 characters, no NUL; empty is the same as absent.";
const DESC_GRANULARITY: &str =
    "The time buckets of the rows; `total` is one row per group for the whole range.";
const DESC_LIMIT: &str = "Most rows returned (reports that rank or list).";
const DESC_FORMAT: &str = "`csv` answers a download instead of JSON.";

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(report: &str, pairs: &[(&str, &str)]) -> String {
        match parse(report, pairs.iter().copied()) {
            Err(ParamError::Invalid { parameter, .. }) => parameter,
            other => panic!("{pairs:?}: {other:?}"),
        }
    }

    /// The route documents exactly the parameters [`parse`] knows.
    #[test]
    fn the_documented_query_is_the_one_parsed() {
        let documented: Vec<String> =
            crate::http::openapi::documented_query("/v1/admin/analytics/{report}")
                .into_iter()
                .map(|(name, _)| name)
                .collect();
        assert_eq!(documented, PARAMETERS);
    }

    #[test]
    fn a_full_query_parses() {
        let params = parse(
            "delivery",
            [
                ("from", "2026-01-01"),
                ("to", "2026-01-31"),
                ("user", "u1"),
                ("type", "invoice"),
                ("channel", "email"),
                ("resource", ""),
                ("granularity", "week"),
                ("limit", "10"),
                ("format", "csv"),
            ],
        )
        .unwrap();
        assert_eq!(params.format, Format::Csv);
        assert_eq!(params.query.report, Some(ReportName::Delivery));
        assert_eq!(params.query.from, Some(jiff::civil::date(2026, 1, 1)));
        assert_eq!(params.query.to, Some(jiff::civil::date(2026, 1, 31)));
        assert_eq!(params.query.user.as_deref(), Some("u1"));
        assert_eq!(params.query.notification_type.as_deref(), Some("invoice"));
        assert_eq!(params.query.channel, Some(ChannelKind::Email));
        assert_eq!(params.query.resource, None);
        assert_eq!(params.query.granularity, Some(Granularity::Week));
        assert_eq!(params.query.limit, Some(10));
        assert_eq!(
            params.csv_file_name(),
            "nudge-delivery-2026-01-01-2026-01-31.csv"
        );
        let bare = parse("summary", []).unwrap();
        assert_eq!(bare.format, Format::Json);
        assert_eq!(bare.csv_file_name(), "nudge-summary.csv");
    }

    #[test]
    fn every_refusal_names_its_parameter() {
        assert!(matches!(
            parse("nope", []),
            Err(ParamError::UnknownReport(name)) if name == "nope"
        ));
        let message = parse("nope", []).unwrap_err().to_string();
        assert!(message.contains("summary, resources"), "{message}");
        for (pairs, parameter) in [
            (vec![("from", "2026-1-1")], "from"),
            (vec![("from", "2026-02-30")], "from"),
            (vec![("to", "2026-01-01T00:00")], "to"),
            (vec![("from", "2026-02-01"), ("to", "2026-01-01")], "from"),
            (vec![("channel", "pigeon")], "channel"),
            (vec![("granularity", "fortnight")], "granularity"),
            (vec![("format", "xml")], "format"),
            (vec![("limit", "0")], "limit"),
            (vec![("limit", "10001")], "limit"),
            (vec![("limit", "ten")], "limit"),
            (vec![("user", "a\0b")], "user"),
            (vec![("colour", "red")], "colour"),
            (vec![("user", "a"), ("user", "b")], "user"),
        ] {
            assert_eq!(invalid("summary", &pairs), parameter, "{pairs:?}");
        }
        let message = parse("summary", [("limit", "0")]).unwrap_err().to_string();
        assert!(message.starts_with("limit: "), "{message}");
    }
}
