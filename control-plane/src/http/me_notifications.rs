//! The signed-in user's notification center, under `/v1/me/notifications`
//! (see [`super::user_auth`] for the token).
//!
//! * `GET /v1/me/notifications` — a page of the inbox: `type` (repeatable
//!   or comma-separated), `category`, `read` (`true`/`false`), `archived`
//!   (`true` lists only archived; by default they are left out), `since`,
//!   `until` (RFC 3339), `q` (text in title or body), `sort` (`newest`,
//!   `oldest`, `unread_first`), `snoozed` (`true` lists only snoozed
//!   items; by default they are left out), `cursor`, `limit` (1–200,
//!   default 20).
//! * `GET /v1/me/notifications/counts` — the badge: unread, unseen, total,
//!   and per category.
//! * `GET /v1/me/notifications/{id}` — one item.
//! * `POST /v1/me/notifications/{id}/{read|unread|seen|archive|unarchive|unsnooze}`,
//!   `DELETE /v1/me/notifications/{id}` — one item.
//! * `POST /v1/me/notifications/{id}/snooze` — `{"until": RFC 3339}`: hide
//!   the item until then (see [`crate::inbox::snooze`]); `unsnooze` brings
//!   it back early.
//! * `POST /v1/me/notifications/bulk` — `{"ids": [...], "action": "read"}`
//!   with any of the actions above or `delete`; `snooze` takes `until`
//!   beside them (at most 500 ids).
//! * `POST /v1/me/notifications/read-all` — optional `{"category": …}`.
//! * `GET /v1/me/notifications/export?format=csv|json` — every item
//!   matching the same filters, as a download streamed page by page (see
//!   [`crate::chunks`]).
//!
//! A listing examines at most [`crate::inbox::SCAN_BUDGET`] items: a page
//! may be short, even empty, and still carry `next_cursor` (the scan
//! stopped there); only a page without it is the last.
//!
//! Another user's ids are `404 not_found`, exactly like ids that do not
//! exist: a user cannot even learn whether someone else's id is real.
//! Reading an item also records `read` on its delivery (the engagement
//! lifecycle), best effort.

use std::borrow::Cow;

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::{Ref, RefOr};

use super::download::{FormatParam, ListFormat, ListWriter};
use super::openapi::responses;
use super::user_auth::Me;
use super::{ApiError, HttpState, JsonBody};
use crate::chunks::{self, StreamError};
use crate::inbox::{Action, Counts, InboxError, InboxItem, InboxQuery, Page, Sort};

/// Most ids in one bulk call.
const MAX_BULK_IDS: usize = 500;
/// Items read per page while exporting.
const EXPORT_PAGE: usize = 200;

pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/notifications", get(list))
        .route("/notifications/counts", get(counts))
        .route("/notifications/export", get(export))
        .route("/notifications/bulk", post(bulk))
        .route("/notifications/read-all", post(read_all))
        .route("/notifications/{id}", get(one).delete(delete_one))
        // A static segment wins over `{action}`: only snooze takes a body.
        .route("/notifications/{id}/snooze", post(snooze_one))
        .route("/notifications/{id}/{action}", post(act_on_one))
}

impl From<InboxError> for ApiError {
    fn from(error: InboxError) -> Self {
        match error {
            InboxError::Invalid(message) => ApiError::bad_request(message),
            failed => {
                tracing::error!(error = %failed, "inbox failed in http handler");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    failed.to_string(),
                )
            }
        }
    }
}

/// The one-word actions `POST /v1/me/notifications/{id}/{action}` takes
/// (`snooze`, which takes a body, has its own route).
const ITEM_ACTIONS: [(&str, Action); 6] = [
    ("read", Action::Read),
    ("unread", Action::Unread),
    ("seen", Action::Seen),
    ("archive", Action::Archive),
    ("unarchive", Action::Unarchive),
    ("unsnooze", Action::Unsnooze),
];

/// `{id}` of `/v1/me/notifications/{id}…`.
#[derive(utoipa::IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
#[expect(
    dead_code,
    reason = "documents the `Path<String>` the handlers extract"
)]
struct ItemId(
    /// The item's id.
    #[param(example = "dummy-item")]
    String,
);

/// `{action}` of `/v1/me/notifications/{id}/{action}`: one of
/// [`ITEM_ACTIONS`]. Built by hand: a derived parameter cannot take both
/// a computed schema and a description.
struct ItemAction;

impl utoipa::IntoParams for ItemAction {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::path::ParameterIn;
        let names = super::openapi::string_enum(ITEM_ACTIONS.map(|(name, _)| name));
        let what = "What to do; another word is a 404.";
        vec![
            super::openapi::parameter("action", ParameterIn::Path, what, names)
                .example(Some("read".into()))
                .build(),
        ]
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no notification {id}"),
    )
}

/// The listing's query string. Parsed by hand: `type` may repeat, and
/// every bad value must name its parameter.
fn parse_query(raw: Option<&str>) -> Result<(InboxQuery, Option<String>), ApiError> {
    let mut query = InboxQuery::default();
    let mut limit = None;
    let mut format = None;
    for (key, value) in form_urlencoded_pairs(raw.unwrap_or_default())? {
        let bad = |what: &str| ApiError::bad_request(format!("{key}: {what}"));
        match key.as_str() {
            "type" => query.types.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned),
            ),
            "category" => query.category = Some(value),
            "read" => {
                query.read = Some(parse_bool(&value).ok_or_else(|| bad("expected true or false"))?)
            }
            "archived" => {
                query.archived =
                    Some(parse_bool(&value).ok_or_else(|| bad("expected true or false"))?);
            }
            "since" => {
                query.since =
                    Some(parse_time(&value).ok_or_else(|| bad("expected an RFC 3339 time"))?)
            }
            "until" => {
                query.until =
                    Some(parse_time(&value).ok_or_else(|| bad("expected an RFC 3339 time"))?)
            }
            "snoozed" => {
                query.snoozed =
                    Some(parse_bool(&value).ok_or_else(|| bad("expected true or false"))?);
            }
            "q" => query.search = Some(value),
            "sort" => {
                query.sort = match value.as_str() {
                    "newest" => Sort::Newest,
                    "oldest" => Sort::Oldest,
                    "unread_first" => Sort::UnreadFirst,
                    _ => return Err(bad("expected newest, oldest or unread_first")),
                };
            }
            // An empty cursor is no cursor (the first page).
            "cursor" => query.cursor = Some(value).filter(|cursor| !cursor.is_empty()),
            "limit" => {
                limit = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| bad("expected a number"))?,
                )
            }
            "format" => format = Some(value),
            _ => return Err(ApiError::bad_request(format!("unknown parameter {key:?}"))),
        }
    }
    query.limit = InboxQuery::checked_limit(limit).map_err(ApiError::bad_request)?;
    // Here too, not only in the store: an export must be refused before
    // its first chunk, not aborted after it.
    query.check()?;
    Ok((query, format))
}

/// Any text without NUL, as a name filter takes it (its schema only).
struct NameFilter;

impl utoipa::PartialSchema for NameFilter {
    fn schema() -> RefOr<Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(super::openapi::NO_NUL))
            .into()
    }
}

impl ToSchema for NameFilter {}

/// The filters [`parse_query`] reads for the listing and the export, for
/// the routes' `params(…)`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(dead_code, reason = "documents what `parse_query` reads")]
struct FilterParams {
    /// Notification types; repeat the parameter or separate with commas.
    #[param(rename = "type", value_type = Option<Vec<NameFilter>>, inline, style = Form, explode)]
    types: Option<String>,
    /// Only this category (`uncategorised` for types without one).
    #[param(pattern = "^[^\\u0000]*$")]
    category: Option<String>,
    /// `true`: only read items; `false`: only unread (`1`/`0` also accepted).
    #[param(value_type = Option<bool>)]
    read: Option<String>,
    /// `true` lists only archived items; by default they are left out.
    #[param(value_type = Option<bool>)]
    archived: Option<String>,
    /// `true` lists only snoozed items; by default they are left out
    /// (`1`/`0` also accepted).
    #[param(value_type = Option<bool>)]
    snoozed: Option<String>,
    /// Created at or after (RFC 3339).
    #[param(value_type = Option<Timestamp>)]
    since: Option<String>,
    /// Created before (RFC 3339).
    #[param(value_type = Option<Timestamp>)]
    until: Option<String>,
    /// Text in title or body.
    q: Option<String>,
    /// Order; `newest` when absent.
    // No `default = …`: see `download::FormatParam`.
    #[param(value_type = Option<Sort>, inline)]
    sort: Option<String>,
}

/// The listing's paging, read by [`parse_query`] too.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(dead_code, reason = "documents what `parse_query` reads")]
struct PageParams {
    /// A `next_cursor` from the previous page, as given (an opaque
    /// string). Empty is the same as absent (the first page); anything
    /// else this server did not give out is a 400 naming `cursor`.
    #[param(pattern = "^$|^[ab]\\.[^\\u0000]+$")]
    cursor: Option<String>,
    /// Items per page.
    // Literals: utoipa takes no constant here; a unit test checks them.
    #[param(value_type = Option<usize>, minimum = 1, maximum = 200, default = 20)]
    limit: Option<String>,
}

fn form_urlencoded_pairs(raw: &str) -> Result<Vec<(String, String)>, ApiError> {
    super::form::parse(raw.as_bytes()).map_err(|error| ApiError::bad_request(error.to_string()))
}

fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

fn parse_time(text: &str) -> Option<Timestamp> {
    text.parse().ok()
}

#[utoipa::path(
    get,
    path = "/v1/me/notifications",
    operation_id = "listMyNotifications",
    summary = "A page of the signed-in user's inbox",
    description = "A request examines at most 2,000 items (the scan budget), whatever the filters match: type, category, read, archived, snoozed, since and until are checked in the database on a bounded window of the user's items, `q` on what it returns. When the budget runs out first, the page holds the matches found so far — fewer than `limit`, possibly none — and a `next_cursor` that resumes the scan where it stopped. Keep paging while `next_cursor` is present: a short or empty page with a cursor is not the end; only a page without `next_cursor` is the last. Every bad value is a 400 naming its parameter; unknown parameters are refused.",
    tags = ["me", "inbox"],
    security(("userToken" = [])),
    params(FilterParams, PageParams),
    responses(
        (status = 200, body = Page, description = "A page."),
        (status = 400, response = responses::BadRequest),
        responses::UserErrors,
    ),
)]
pub(crate) async fn list(
    State(state): State<HttpState>,
    Me(user): Me,
    RawQuery(raw): RawQuery,
) -> Result<Json<Page>, ApiError> {
    let (query, format) = parse_query(raw.as_deref())?;
    if format.is_some() {
        return Err(ApiError::bad_request("format: only for /export"));
    }
    let page = state.inbox.list(&user, &query).await?;
    Ok(Json(page))
}

#[utoipa::path(
    get,
    path = "/v1/me/notifications/counts",
    operation_id = "getMyNotificationCounts",
    summary = "The badge: unread, unseen, total and per category",
    tags = ["me", "inbox"],
    security(("userToken" = [])),
    responses(
        (status = 200, body = Counts, description = "The counts."),
        responses::UserErrors,
    ),
)]
pub(crate) async fn counts(
    State(state): State<HttpState>,
    Me(user): Me,
) -> Result<Json<Counts>, ApiError> {
    let counts = state.inbox.counts(&user).await?;
    Ok(Json(counts))
}

#[utoipa::path(
    get,
    path = "/v1/me/notifications/{id}",
    operation_id = "getMyNotification",
    summary = "One item",
    tags = ["me", "inbox"],
    security(("userToken" = [])),
    params(ItemId),
    responses(
        (status = 200, body = InboxItem, description = "The item."),
        (status = 404, response = responses::NotFound),
        responses::UserErrors,
    ),
)]
pub(crate) async fn one(
    State(state): State<HttpState>,
    Me(user): Me,
    Path(id): Path<String>,
) -> Result<Json<InboxItem>, ApiError> {
    let found = state.inbox.get(&user, &id).await?;
    found.map(Json).ok_or_else(|| not_found(&id))
}

#[utoipa::path(
    post,
    path = "/v1/me/notifications/{id}/{action}",
    operation_id = "actOnMyNotification",
    summary = "Mark one item read, unread, seen, archived or unarchived, or bring a snoozed item back",
    description = "Reading an item also records `read` on its delivery (best effort). `unsnooze` brings a snoozed item back now, as unread and unseen (unchanged when it is not snoozed). Snoozing takes a body: `POST /v1/me/notifications/{id}/snooze`.",
    tags = ["me", "inbox"],
    security(("userToken" = [])),
    params(ItemId, ItemAction),
    responses(
        (status = 200, body = InboxItem, description = "The item after the action (unchanged when it already was in that state)."),
        (status = 404, response = responses::NotFound),
        responses::UserErrors,
    ),
)]
pub(crate) async fn act_on_one(
    State(state): State<HttpState>,
    Me(user): Me,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let Some(&(_, action)) = ITEM_ACTIONS.iter().find(|(name, _)| *name == action) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no action {action:?}: read, unread, seen, archive, unarchive, snooze or unsnooze"
            ),
        ));
    };
    let item = apply_one(&state, user, id, action).await?;
    Ok(Json(json!(item)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SnoozeRequest)]
pub(crate) struct Snooze {
    /// When the item comes back: an RFC 3339 time with an offset (`Z` or
    /// `+01:00`), between 1 second and 366 days ahead.
    // A format of our own: a fuzzer's arbitrary date-time would mostly
    // fall outside that window.
    #[schema(format = "nudge-snooze-time")]
    until: String,
}

/// `until` as a time: RFC 3339 with an offset (`Z` or `+01:00`).
fn snooze_until(until: &str) -> Result<Timestamp, ApiError> {
    parse_time(until).ok_or_else(|| {
        ApiError::bad_request(format!(
            "until: expected an RFC 3339 time with an offset, got {until:?}"
        ))
    })
}

#[utoipa::path(
    post,
    path = "/v1/me/notifications/{id}/snooze",
    operation_id = "snoozeMyNotification",
    summary = "Hide one item until a time",
    description = "The item leaves listings (unless `snoozed=true` asks for snoozed items) and the unread badge until `until`; then it comes back as unread and unseen, within about a second, and keeps its place in the list (by creation time). Every open live stream of the user gets an `updated` change both times. Snoozing a snoozed item moves its time; `POST /v1/me/notifications/{id}/unsnooze` brings it back early. A time less than a second ahead or more than 366 days ahead is a 400.",
    tags = ["me", "inbox"],
    security(("userToken" = [])),
    params(ItemId),
    request_body = Snooze,
    responses(
        (status = 200, body = InboxItem, description = "The item after the snooze."),
        (status = 400, response = responses::BadRequest),
        (status = 404, response = responses::NotFound),
        responses::UserErrors,
    ),
)]
pub(crate) async fn snooze_one(
    State(state): State<HttpState>,
    Me(user): Me,
    Path(id): Path<String>,
    JsonBody(snooze): JsonBody<Snooze>,
) -> Result<Json<Value>, ApiError> {
    let until = snooze_until(&snooze.until)?;
    let item = apply_one(&state, user, id, Action::Snooze(until)).await?;
    Ok(Json(json!(item)))
}

#[utoipa::path(
    delete,
    path = "/v1/me/notifications/{id}",
    operation_id = "deleteMyNotification",
    summary = "Delete one item",
    tags = ["me", "inbox"],
    security(("userToken" = [])),
    params(ItemId),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, response = responses::NotFound),
        responses::UserErrors,
    ),
)]
pub(crate) async fn delete_one(
    State(state): State<HttpState>,
    Me(user): Me,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    apply_one(&state, user, id, Action::Delete).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Applies `action` to one item; the item after it (unchanged when it
/// already was in that state).
async fn apply_one(
    state: &HttpState,
    user: String,
    id: String,
    action: Action,
) -> Result<Option<InboxItem>, ApiError> {
    let applied = state
        .inbox
        .apply(&user, std::slice::from_ref(&id), action, Timestamp::now())
        .await?;
    let current = state.inbox.get(&user, &id).await?;
    if !applied.missing.is_empty() {
        return Err(not_found(&id));
    }
    if action == Action::Read {
        record_read(state, &applied.changed).await;
    }
    Ok(current)
}

/// Records `read` on the deliveries behind newly read items (best effort:
/// the inbox state is what the user sees; the delivery's engagement is
/// analytics).
async fn record_read(state: &HttpState, items: &[InboxItem]) {
    for item in items {
        let Ok(id) = uuid::Uuid::parse_str(&item.id) else {
            continue;
        };
        let at = item.read_at.unwrap_or_else(Timestamp::now);
        if let Err(error) = state
            .queue
            .record_engagement(id, crate::delivery::Engagement::Read, at)
            .await
        {
            tracing::debug!(delivery_id = %id, %error, "read not recorded on the delivery");
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Bulk {
    ids: Vec<String>,
    action: BulkAction,
    /// With `snooze` only.
    #[serde(default)]
    until: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum BulkAction {
    Read,
    Unread,
    Seen,
    Archive,
    Unarchive,
    Delete,
    Snooze,
    Unsnooze,
}

/// A bulk action's schema is a `oneOf`, stricter than the struct:
/// `snooze` needs `until`, the other actions refuse it ([`Bulk::action`]).
/// Built from the same limits and action names the handler reads.
impl utoipa::PartialSchema for Bulk {
    fn schema() -> RefOr<Schema> {
        use utoipa::openapi::schema::{
            AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Type,
        };
        let ids = || {
            ArrayBuilder::new()
                .items(ObjectBuilder::new().schema_type(Type::String))
                .min_items(Some(1))
                .max_items(Some(MAX_BULK_IDS))
        };
        let plain = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("ids", ids())
            .property("action", Ref::from_schema_name(InboxActionName::name()))
            .required("ids")
            .required("action")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        let until = <Snooze as utoipa::PartialSchema>::schema();
        let snooze = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("ids", ids())
            .property("action", super::openapi::string_enum(["snooze"]))
            .property("until", until_schema(until))
            .required("ids")
            .required("action")
            .required("until")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        OneOfBuilder::new()
            .description(Some(format!(
                "One action on up to {MAX_BULK_IDS} items: any `InboxAction`, or `snooze` with `until`."
            )))
            .item(plain)
            .item(snooze)
            .into()
    }
}

impl ToSchema for Bulk {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("BulkRequest")
    }
}

/// `SnoozeRequest.until`'s schema, so a bulk snooze states the same time.
fn until_schema(snooze: RefOr<Schema>) -> RefOr<Schema> {
    match snooze {
        RefOr::T(Schema::Object(object)) => object
            .properties
            .get("until")
            .cloned()
            .expect("SnoozeRequest has until"),
        _ => unreachable!("SnoozeRequest derives an object schema"),
    }
}

/// The actions of a bulk call but `snooze` (`InboxAction`): the one-word
/// item actions, and `delete`.
pub(crate) struct InboxActionName;

impl utoipa::PartialSchema for InboxActionName {
    fn schema() -> RefOr<Schema> {
        let names = ITEM_ACTIONS.iter().map(|(name, _)| *name);
        let mut schema = super::openapi::string_enum(names.chain(["delete"]));
        schema.description = Some(
            "What to do to items. `read` implies `seen`; `unsnooze` brings snoozed items back now, \
             as unread and unseen. To snooze, send `action: snooze` with `until`."
                .to_owned(),
        );
        schema.into()
    }
}

impl ToSchema for InboxActionName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("InboxAction")
    }
}

impl Bulk {
    fn action(&self) -> Result<Action, ApiError> {
        let action = match self.action {
            BulkAction::Read => Action::Read,
            BulkAction::Unread => Action::Unread,
            BulkAction::Seen => Action::Seen,
            BulkAction::Archive => Action::Archive,
            BulkAction::Unarchive => Action::Unarchive,
            BulkAction::Delete => Action::Delete,
            BulkAction::Unsnooze => Action::Unsnooze,
            BulkAction::Snooze => {
                let until = self
                    .until
                    .as_deref()
                    .ok_or_else(|| ApiError::bad_request("until: required with action snooze"))?;
                return Ok(Action::Snooze(snooze_until(until)?));
            }
        };
        if self.until.is_some() {
            return Err(ApiError::bad_request("until: only with action snooze"));
        }
        Ok(action)
    }
}

#[utoipa::path(
    post,
    path = "/v1/me/notifications/bulk",
    operation_id = "bulkActOnMyNotifications",
    summary = "One action on many items",
    description = "At most 500 ids. Ids that do not exist or are another user's are listed in `not_found`.",
    tags = ["me", "inbox"],
    security(("userToken" = [])),
    request_body = Bulk,
    responses(
        (status = 200, body = BulkResult, description = "What changed, and the ids not found."),
        (status = 400, response = responses::BadRequest),
        responses::UserErrors,
    ),
)]
pub(crate) async fn bulk(
    State(state): State<HttpState>,
    Me(user): Me,
    JsonBody(bulk): JsonBody<Bulk>,
) -> Result<Json<BulkResult>, ApiError> {
    if bulk.ids.is_empty() || bulk.ids.len() > MAX_BULK_IDS {
        return Err(ApiError::bad_request(format!(
            "ids: between 1 and {MAX_BULK_IDS} ids"
        )));
    }
    let action = bulk.action()?;
    let applied = state
        .inbox
        .apply(&user, &bulk.ids, action, Timestamp::now())
        .await?;
    if action == Action::Read {
        record_read(&state, &applied.changed).await;
    }
    let changed = applied.changed.into_iter().map(|item| item.id).collect();
    Ok(Json(BulkResult {
        changed,
        not_found: applied.missing,
    }))
}

/// What a bulk action did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct BulkResult {
    /// Ids whose state changed (already-so items are not listed).
    changed: Vec<String>,
    /// Ids that do not exist or are another user's.
    not_found: Vec<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ReadAllRequest)]
pub(crate) struct ReadAll {
    /// Only this category; all when absent or null.
    #[schema(pattern = "^[^\\u0000]*$")]
    category: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/me/notifications/read-all",
    operation_id = "markAllMyNotificationsRead",
    summary = "Mark every item (or one category) read",
    tags = ["me", "inbox"],
    security(("userToken" = [])),
    request_body(content = Option<ReadAll>),
    responses(
        (status = 200, body = ReadAllResult, description = "How many were marked, and the counts after."),
        (status = 400, response = responses::BadRequest),
        responses::UserErrors,
    ),
)]
pub(crate) async fn read_all(
    State(state): State<HttpState>,
    Me(user): Me,
    body: Option<JsonBody<ReadAll>>,
) -> Result<Json<ReadAllResult>, ApiError> {
    let category = body.and_then(|JsonBody(body)| body.category);
    let marked = state
        .inbox
        .read_all(&user, category.as_deref(), Timestamp::now())
        .await?;
    let counts = state.inbox.counts(&user).await?;
    Ok(Json(ReadAllResult { marked, counts }))
}

/// What "mark all read" did, and the counts after it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ReadAllResult {
    marked: usize,
    counts: Counts,
}

#[utoipa::path(
    get,
    path = "/v1/me/notifications/export",
    operation_id = "exportMyNotifications",
    summary = "Every item matching the filters, as a download",
    description = super::download::STREAMED,
    tags = ["me", "inbox"],
    security(("userToken" = [])),
    params(FilterParams, FormatParam),
    responses(
        (status = 200, description = "The items (`Content-Disposition: attachment`). CSV is RFC 4180 with a header row (`id,notification_id,type,category,title,body,created_at,seen_at,read_at,archived_at,snoozed_until`); fields a spreadsheet would run as a formula are prefixed with `'`.",
         headers(("Content-Disposition" = String, description = "`attachment; filename=\"notifications.json\"` (or `.csv`).")),
         content((Vec<InboxItem> = "application/json"), (String = "text/csv; charset=utf-8"))),
        (status = 400, response = responses::BadRequest),
        responses::UserErrors,
    ),
)]
pub(crate) async fn export(
    State(state): State<HttpState>,
    Me(user): Me,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (mut query, format) = parse_query(raw.as_deref())?;
    let format = ListFormat::parse(format.as_deref())?;
    query.limit = EXPORT_PAGE;
    let inbox = state.inbox.clone();
    let chunks = chunks::spawn(move |mut sink| async move {
        let mut list = ListWriter::start(format, &mut sink, CSV_HEADER);
        loop {
            let page = inbox
                .list(&user, &query)
                .await
                .map_err(StreamError::source)?;
            for item in &page.items {
                list.item(&mut sink, item, csv_row)?;
            }
            // One chunk per page: memory holds a page, not the inbox.
            sink.flush().await?;
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
        list.finish(&mut sink);
        Ok(sink)
    });
    let (content_type, name) = (format.content_type(), format.file_name("notifications"));
    super::download::streamed(chunks, content_type, &name).await
}

const CSV_HEADER: &str = "id,notification_id,type,category,title,body,created_at,seen_at,read_at,archived_at,snoozed_until\r\n";

/// One RFC 4180 CSV row (after [`CSV_HEADER`]): fields quoted when they
/// need it. Fields that a spreadsheet would run as a formula (`=`, `+`,
/// `-`, `@` first) are prefixed with `'` (CSV injection).
fn csv_row(item: &InboxItem) -> String {
    let time = |t: Option<Timestamp>| t.map(|t| t.to_string()).unwrap_or_default();
    let fields = [
        item.id.clone(),
        item.notification_id.clone(),
        item.notification_type.clone(),
        item.category.clone().unwrap_or_default(),
        item.title.clone(),
        item.body.clone(),
        item.created_at.to_string(),
        time(item.seen_at),
        time(item.read_at),
        time(item.archived_at),
        time(item.snoozed_until),
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

    #[test]
    fn query_parameters_are_checked_by_name() {
        let (query, _) = parse_query(Some(
            "type=a,b&type=c&read=false&sort=unread_first&limit=5&q=hi",
        ))
        .unwrap();
        assert_eq!(query.types, ["a", "b", "c"]);
        assert_eq!(query.read, Some(false));
        assert_eq!(query.sort, Sort::UnreadFirst);
        assert_eq!(query.limit, 5);
        assert_eq!(query.search.as_deref(), Some("hi"));
        for bad in [
            "read=maybe",
            "sort=best",
            "snoozed=later",
            "limit=0",
            "limit=x",
            "since=yesterday",
            "colour=red",
        ] {
            assert!(parse_query(Some(bad)).is_err(), "{bad}");
        }
    }

    /// Every action `BulkRequest` documents is one a bulk call reads, and
    /// `snooze` is the only other.
    #[test]
    fn the_documented_bulk_actions_are_the_ones_read() {
        let schema =
            serde_json::to_value(<InboxActionName as utoipa::PartialSchema>::schema()).unwrap();
        let names = schema["enum"].as_array().unwrap();
        assert_eq!(names.len() + 1, 8, "every BulkAction but snooze");
        for name in names.iter().chain([&Value::from("snooze")]) {
            let action: Result<BulkAction, _> = serde_json::from_value(name.clone());
            assert!(action.is_ok(), "{name} is documented but not read");
        }
    }

    /// The documented parameters are the ones [`parse_query`] reads, and
    /// `limit`'s bounds the ones it enforces.
    #[test]
    fn the_documented_query_is_the_one_parsed() {
        use crate::http::openapi::documented_query;
        use crate::inbox::query::{DEFAULT_LIMIT, MAX_LIMIT};
        for path in ["/v1/me/notifications", "/v1/me/notifications/export"] {
            for (name, schema) in documented_query(path) {
                if let Err(error) = parse_query(Some(&format!("{name}=1"))) {
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
    }
}
