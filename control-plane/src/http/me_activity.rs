//! The signed-in user's activity feed: their own tracked events, under
//! `/v1/me/activity`.
//!
//! * `GET /v1/me/activity` — a page, oldest first: `kind` (`track`, `page`,
//!   `screen`, `identify`, …; repeatable or comma-separated), `event` (a
//!   track's name, or a page's or screen's name), `resource` (matches the
//!   event's `properties.resource_id` or `properties.product_id`), `since`,
//!   `until` (RFC 3339, on the event's own time), `cursor`, `limit` (1–200,
//!   default 50).
//! * `GET /v1/me/activity/summary` — the same filters; totals by kind and
//!   by event name, first and last time, active days.
//! * `GET /v1/me/activity/export?format=csv|json` — every matching event,
//!   streamed (see [`crate::chunks`]).
//!
//! **A listing request examines at most [`SCAN_BUDGET`] events.** The
//! filters are checked on the decoded event (the event store keeps each
//! event as one payload), so a filter that matches nothing in a long
//! history would otherwise read all of it: when the budget runs out
//! first, the page holds the matches found so far (possibly none) and a
//! `next_cursor` that resumes the scan after the last event examined.
//! Only a page without `next_cursor` is the last. Summary and export read
//! everything, page by page, in bounded memory.
//!
//! What a user sees of an event is what they did: id, kind, name,
//! properties and time. The application's write key, the agent id, the
//! raw `context` and `integrations`, and `notify` calls (the app telling
//! Nudge to message the user, not the user's activity) are left out.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;

use super::download::{FormatParam, ListFormat, ListWriter};
use super::openapi::responses;
use super::user_auth::Me;
use super::{ApiError, HttpState};
use crate::chunks::{self, StreamError};
use crate::event::{Cursor, Event, EventBody, JsonObject};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;
/// Events one listing request examines at most (see the module doc).
pub const SCAN_BUDGET: usize = 2_000;
/// Events read from the store per step while filtering.
const SCAN_PAGE: usize = 500;

pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/activity", get(list))
        .route("/activity/summary", get(summary))
        .route("/activity/export", get(export))
}

/// One event as its user sees it (the field docs are the API's
/// descriptions).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(
    description = "One of the user's own tracked events (never `notify`, never the application's write key or context)."
)]
pub struct Activity {
    pub id: String,
    #[schema(schema_with = kind_schema)]
    pub kind: &'static str,
    /// The track's event name, or the page's or screen's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub name: Option<String>,
    #[schema(value_type = Object)]
    pub properties: JsonObject,
    /// The client's time, else when Nudge received it.
    pub at: Timestamp,
}

/// `Activity.kind`'s schema: every event kind but `notify`, which
/// [`activity`] leaves out.
fn kind_schema() -> utoipa::openapi::Object {
    super::openapi::string_enum(KINDS)
}

/// An activity kind as the `kind` parameter names it (its schema only).
struct KindName;

impl utoipa::PartialSchema for KindName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        kind_schema().into()
    }
}

impl utoipa::ToSchema for KindName {}

/// The filters every activity route reads ([`Filter::parse`], by hand: a
/// bad value must name its parameter), for the routes' `params(…)`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(dead_code, reason = "documents what `Filter::parse` reads")]
struct FilterParams {
    /// Only these kinds (comma-separated); an empty item (`kind=`,
    /// `kind=track,`) is a 400.
    #[param(value_type = Option<Vec<KindName>>, inline, style = Form, explode = false, min_items = 1)]
    kind: Option<String>,
    /// Only this event (or page/screen) name.
    event: Option<String>,
    /// Only events whose `resource_id` or `product_id` property is this.
    resource: Option<String>,
    /// At or after (RFC 3339).
    #[param(value_type = Option<Timestamp>)]
    since: Option<String>,
    /// Before (RFC 3339).
    #[param(value_type = Option<Timestamp>)]
    until: Option<String>,
    /// A `next_cursor` from the previous page, as given (an opaque
    /// string). Empty is the same as absent; anything else this server
    /// did not give out is a 400 naming `cursor`.
    #[param(pattern = "^[0-9]{0,19}$")]
    cursor: Option<String>,
}

/// The listing's page size, read by [`Filter::parse`] too.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(dead_code, reason = "documents what `Filter::parse` reads")]
struct LimitParam {
    /// Items per page.
    // Literals: utoipa takes no constant here; a unit test checks them.
    #[param(value_type = Option<usize>, minimum = 1, maximum = 200, default = 50)]
    limit: Option<String>,
}

/// One page of a user's activity.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ActivityPage {
    activity: Vec<Activity>,
    /// Pass back as `cursor`; absent on the last page only. A page may
    /// hold fewer than `limit` items, or none, and still carry a cursor:
    /// the request's scan budget ran out before the page filled.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    next_cursor: Option<String>,
}

fn activity(event: &Event) -> Option<Activity> {
    let (name, properties) = match &event.body {
        EventBody::Notify(_) => return None,
        EventBody::Track { event, properties } => (Some(event.clone()), properties.clone()),
        EventBody::Page {
            name, properties, ..
        }
        | EventBody::Screen {
            name, properties, ..
        } => (name.clone(), properties.clone()),
        EventBody::Identify { traits } => (None, traits.clone()),
        _ => (None, JsonObject::new()),
    };
    Some(Activity {
        id: event.id.clone(),
        kind: event.kind().as_str(),
        name,
        properties,
        at: event.timestamp.unwrap_or(event.ingested_at),
    })
}

#[derive(Debug, Default)]
struct Filter {
    kinds: BTreeSet<String>,
    event: Option<String>,
    resource: Option<String>,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    cursor: Option<Cursor>,
    limit: usize,
    format: Option<String>,
}

impl Filter {
    fn parse(raw: Option<&str>) -> Result<Filter, ApiError> {
        let pairs = super::form::parse(raw.unwrap_or_default().as_bytes())
            .map_err(|error| ApiError::bad_request(error.to_string()))?;
        let mut filter = Filter {
            limit: DEFAULT_LIMIT,
            ..Filter::default()
        };
        for (key, value) in pairs {
            let bad = |what: &str| ApiError::bad_request(format!("{key}: {what}"));
            match key.as_str() {
                "kind" => {
                    // Every comma-separated item a kind: an empty one (`kind=`,
                    // `kind=track,`) is a mistake, not "every kind".
                    for kind in value.split(',') {
                        if kind.is_empty() {
                            return Err(bad("an empty kind; leave `kind` out for every kind"));
                        }
                        if !KINDS.contains(&kind) {
                            return Err(bad(&format!("unknown kind {kind:?}")));
                        }
                        filter.kinds.insert(kind.to_owned());
                    }
                }
                "event" => filter.event = Some(value),
                "resource" => filter.resource = Some(value),
                "since" => {
                    filter.since = Some(
                        value
                            .parse()
                            .map_err(|_| bad("expected an RFC 3339 time"))?,
                    )
                }
                "until" => {
                    filter.until = Some(
                        value
                            .parse()
                            .map_err(|_| bad("expected an RFC 3339 time"))?,
                    )
                }
                // An empty cursor is no cursor (the first page).
                "cursor" if value.is_empty() => filter.cursor = None,
                "cursor" => {
                    filter.cursor = Some(
                        value
                            .parse()
                            .map_err(|_| bad("not a cursor this server gave out"))?,
                    )
                }
                "limit" => {
                    filter.limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| bad(&format!("expected 1 to {MAX_LIMIT}")))?;
                }
                "format" => filter.format = Some(value),
                _ => return Err(ApiError::bad_request(format!("unknown parameter {key:?}"))),
            }
        }
        Ok(filter)
    }

    fn matches(&self, activity: &Activity) -> bool {
        if !self.kinds.is_empty() && !self.kinds.contains(activity.kind) {
            return false;
        }
        if self
            .event
            .as_ref()
            .is_some_and(|event| activity.name.as_ref() != Some(event))
        {
            return false;
        }
        if let Some(resource) = &self.resource {
            let named = ["resource_id", "product_id"].iter().any(|key| {
                activity
                    .properties
                    .get(*key)
                    .is_some_and(|value| match value {
                        Value::String(text) => text == resource,
                        Value::Number(number) => number.to_string() == *resource,
                        _ => false,
                    })
            });
            if !named {
                return false;
            }
        }
        if self.since.is_some_and(|since| activity.at < since) {
            return false;
        }
        if self.until.is_some_and(|until| activity.at >= until) {
            return false;
        }
        true
    }
}

/// The kinds a user's activity has (every kind but `notify`).
const KINDS: [&str; 8] = [
    "track",
    "identify",
    "page",
    "screen",
    "group",
    "alias",
    "session_start",
    "session_end",
];

/// Up to `limit` matching activities after the filter's cursor, and the
/// cursor of the next page when there may be more: after the page's last
/// activity, or after the last event examined when [`SCAN_BUDGET`] events
/// were examined first.
async fn page(
    state: &HttpState,
    user: &str,
    filter: &Filter,
    limit: usize,
) -> Result<(Vec<Activity>, Option<Cursor>), ApiError> {
    let mut found = Vec::new();
    let mut after = filter.cursor;
    let mut budget = SCAN_BUDGET;
    loop {
        let page = state
            .store
            .events_for_user(user, budget.min(SCAN_PAGE), after)
            .await?;
        budget = budget.saturating_sub(page.events.len());
        let read = page.events.len();
        for (index, (event, cursor)) in page.events.iter().zip(page.cursors.iter()).enumerate() {
            after = Some(*cursor);
            let Some(activity) = activity(event) else {
                continue;
            };
            if filter.matches(&activity) {
                found.push(activity);
                if found.len() == limit {
                    let more = index + 1 < read || page.next.is_some();
                    return Ok((found, after.filter(|_| more)));
                }
            }
        }
        if page.next.is_none() {
            return Ok((found, None));
        }
        if budget == 0 {
            return Ok((found, after));
        }
    }
}

#[utoipa::path(
    get,
    path = "/v1/me/activity",
    operation_id = "listMyActivity",
    summary = "The user's own tracked events",
    description = "A request examines at most 2,000 of the user's events (the scan budget): the filters are checked on each event, so a filter that matches nothing in a long history does not read all of it. When the budget runs out first, the page holds the matches found so far — fewer than `limit`, possibly none — and a `next_cursor` that resumes the scan after the last event examined. Keep paging while `next_cursor` is present; only a page without it is the last. Unknown parameters are refused (400).",
    tags = ["me", "activity"],
    security(("userToken" = [])),
    params(FilterParams, LimitParam),
    responses(
        (status = 200, body = ActivityPage, description = "A page of activity."),
        (status = 400, response = responses::BadRequest),
        responses::UserErrors,
    ),
)]
pub(crate) async fn list(
    State(state): State<HttpState>,
    Me(user): Me,
    RawQuery(raw): RawQuery,
) -> Result<Json<ActivityPage>, ApiError> {
    let filter = Filter::parse(raw.as_deref())?;
    let (activity, next) = page(&state, &user, &filter, filter.limit).await?;
    Ok(Json(ActivityPage {
        activity,
        next_cursor: next.map(|next| next.0.to_string()),
    }))
}

/// Every matching activity after the filter's cursor, one store page at
/// a time (for summaries and exports: all of it, in bounded memory).
struct Pages<'a> {
    store: &'a crate::storage::EventStore,
    user: &'a str,
    filter: &'a Filter,
    /// Where the next page starts; `None` once the last was read.
    next: Option<Option<Cursor>>,
}

impl<'a> Pages<'a> {
    fn new(store: &'a crate::storage::EventStore, user: &'a str, filter: &'a Filter) -> Self {
        Pages {
            store,
            user,
            filter,
            next: Some(filter.cursor),
        }
    }

    /// The matches of the next store page (possibly none); `None` after
    /// the last.
    async fn next(&mut self) -> Result<Option<Vec<Activity>>, crate::storage::StorageError> {
        let Some(after) = self.next else {
            return Ok(None);
        };
        let page = self
            .store
            .events_for_user(self.user, SCAN_PAGE, after)
            .await?;
        self.next = page.next.map(Some);
        Ok(Some(
            page.events
                .iter()
                .filter_map(activity)
                .filter(|a| self.filter.matches(a))
                .collect(),
        ))
    }
}

/// What `/v1/me/activity/summary` answers.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
#[schema(as = ActivitySummary, description = "Totals of the matching activity.")]
pub(crate) struct Summary {
    total: u64,
    /// Per kind (`track`, `page`, …).
    #[schema(value_type = BTreeMap<String, u64>)]
    by_kind: BTreeMap<&'static str, u64>,
    /// Per track event name, page or screen name.
    by_event: BTreeMap<String, u64>,
    /// RFC 3339 time; `null` when nothing matched.
    #[schema(required = true)]
    first_at: Option<Timestamp>,
    /// RFC 3339 time; `null` when nothing matched.
    #[schema(required = true)]
    last_at: Option<Timestamp>,
    /// Distinct UTC days with activity.
    active_days: usize,
}

/// Totals and days seen so far; what [`Summary`] is made of.
#[derive(Debug, Default)]
struct Tally {
    summary: Summary,
    days: BTreeSet<i64>,
}

impl Tally {
    fn add(&mut self, item: &Activity) {
        let summary = &mut self.summary;
        summary.total += 1;
        *summary.by_kind.entry(item.kind).or_default() += 1;
        if let Some(name) = &item.name {
            *summary.by_event.entry(name.clone()).or_default() += 1;
        }
        summary.first_at = Some(summary.first_at.map_or(item.at, |t| t.min(item.at)));
        summary.last_at = Some(summary.last_at.map_or(item.at, |t| t.max(item.at)));
        self.days.insert(item.at.as_second().div_euclid(86_400));
    }

    fn finish(mut self) -> Summary {
        self.summary.active_days = self.days.len();
        self.summary
    }
}

#[utoipa::path(
    get,
    path = "/v1/me/activity/summary",
    operation_id = "getMyActivitySummary",
    summary = "Totals of the user's activity",
    tags = ["me", "activity"],
    security(("userToken" = [])),
    params(FilterParams),
    responses(
        (status = 200, body = Summary, description = "The summary."),
        (status = 400, response = responses::BadRequest),
        responses::UserErrors,
    ),
)]
pub(crate) async fn summary(
    State(state): State<HttpState>,
    Me(user): Me,
    RawQuery(raw): RawQuery,
) -> Result<Json<Summary>, ApiError> {
    let filter = Filter::parse(raw.as_deref())?;
    let mut tally = Tally::default();
    let mut pages = Pages::new(&state.store, &user, &filter);
    while let Some(page) = pages.next().await? {
        page.iter().for_each(|item| tally.add(item));
    }
    Ok(Json(tally.finish()))
}

#[utoipa::path(
    get,
    path = "/v1/me/activity/export",
    operation_id = "exportMyActivity",
    summary = "The user's activity as a download",
    description = super::download::STREAMED,
    tags = ["me", "activity"],
    security(("userToken" = [])),
    params(FilterParams, FormatParam),
    responses(
        (status = 200, description = "Every matching activity (`Content-Disposition: attachment`); CSV columns `id,kind,name,at,properties`.",
         headers(("Content-Disposition" = String, description = "`attachment; filename=\"activity.json\"` (or `.csv`).")),
         content((Vec<Activity> = "application/json"), (String = "text/csv; charset=utf-8"))),
        (status = 400, response = responses::BadRequest),
        responses::UserErrors,
    ),
)]
pub(crate) async fn export(
    State(state): State<HttpState>,
    Me(user): Me,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let filter = Filter::parse(raw.as_deref())?;
    let format = ListFormat::parse(filter.format.as_deref())?;
    let store = state.store.clone();
    let chunks = chunks::spawn(move |mut sink| async move {
        let mut list = ListWriter::start(format, &mut sink, "id,kind,name,at,properties\r\n");
        let mut pages = Pages::new(&store, &user, &filter);
        while let Some(page) = pages.next().await.map_err(StreamError::source)? {
            for item in &page {
                list.item(&mut sink, item, csv_row)?;
            }
            // One chunk per page read: memory holds a page, not the history.
            sink.flush().await?;
        }
        list.finish(&mut sink);
        Ok(sink)
    });
    let (content_type, name) = (format.content_type(), format.file_name("activity"));
    super::download::streamed(chunks, content_type, &name).await
}

fn csv_row(item: &Activity) -> String {
    let fields = [
        item.id.clone(),
        item.kind.to_owned(),
        item.name.clone().unwrap_or_default(),
        item.at.to_string(),
        Value::Object(item.properties.clone()).to_string(),
    ];
    let row: Vec<String> = fields
        .iter()
        .map(|field| crate::csv::field(field))
        .collect();
    let mut line = row.join(",");
    line.push_str("\r\n");
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::openapi::documented_query;

    /// The documented parameters are the ones [`Filter::parse`] reads,
    /// and `limit`'s bounds the ones it enforces.
    #[test]
    fn the_documented_query_is_the_one_parsed() {
        for path in [
            "/v1/me/activity",
            "/v1/me/activity/summary",
            "/v1/me/activity/export",
        ] {
            for (name, schema) in documented_query(path) {
                if let Err(error) = Filter::parse(Some(&format!("{name}=1"))) {
                    assert!(
                        !error.message.starts_with("unknown parameter"),
                        "{path}: {name} is documented but not read"
                    );
                }
                if name == "limit" {
                    assert_eq!(schema["minimum"], 1);
                    assert_eq!(schema["maximum"], MAX_LIMIT);
                    assert_eq!(schema["default"], DEFAULT_LIMIT);
                }
            }
        }
        assert!(Filter::parse(Some("colour=red")).is_err());
    }
}
