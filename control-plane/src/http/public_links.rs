//! The public routes behind the links in messages (no admin token: the
//! signed token in the path is the authority): one-click unsubscribe
//! (RFC 8058) for the `List-Unsubscribe` header of emails.
//!
//! * `GET /v1/unsubscribe/{token}` — a small HTML page that says what the
//!   link stops, with a button that POSTs. It **changes nothing**: mail
//!   scanners and link previews fetch every URL in a message, and must not
//!   unsubscribe anyone.
//! * `POST /v1/unsubscribe/{token}` with the body
//!   `List-Unsubscribe=One-Click` (form-encoded, or `multipart/form-data`,
//!   both of which RFC 8058 allows) — switches the token's notification
//!   type off on its channel in the user's preferences, as if the user had
//!   done it. Idempotent: posting again answers 200 again. The answer is
//!   JSON (`{"unsubscribed":true,"notification_type":…,"channel":…}`), or a
//!   page when the request accepts `text/html` (the GET page's button).
//!
//! Refusals change nothing, and say why (JSON `ApiError`, or a page for
//! HTML requests):
//!
//! | status | code | when |
//! |---|---|---|
//! | 400 | `invalid_link` | the token was altered, cut short, or not signed by this server |
//! | 400 | `bad_request` | a POST body other than `List-Unsubscribe=One-Click` |
//! | 409 | `critical_type` | the type is critical: it cannot be switched off |
//! | 404 | `links_disabled` | `public_url` / `link_secret` are not configured (always JSON: it is for the operator) |
//!
//! Emails of critical types carry no link (see `engine::plan`), so a 409
//! only happens when a type became critical after the mail was sent.
//! Telling the user plainly beats a 200 that would leave them believing
//! they unsubscribed.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use super::{ApiError, ErrorBody, HttpState, form};
use crate::channels::ChannelKind;
use crate::links::UnsubscribeClaims;
use crate::preferences::PreferenceError;

/// The one-click body is 26 bytes; this leaves room for multipart framing.
const MAX_BODY: usize = 16 * 1024;

pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/v1/unsubscribe/{token}", get(page).post(unsubscribe))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// The confirmation page: what the link stops, and a button.
#[utoipa::path(
    get,
    path = "/v1/unsubscribe/{token}",
    operation_id = "showUnsubscribePage",
    summary = "The unsubscribe confirmation page",
    description = "Public: the HMAC-signed token in the path authenticates (signed with `link_secret`).",
    tags = ["public"],
    security(),
    params(TokenParam),
    responses(
        (status = 200, content_type = "text/html; charset=utf-8", body = String, description = "A self-contained page saying what the link stops, with a button that POSTs (or, for a critical type, that it cannot be switched off). Changes nothing: mail scanners fetch every link."),
        (status = 400, content_type = "text/html; charset=utf-8", body = String, description = "A page: the link was altered, cut short, or not signed by this server (`invalid_link`)."),
        (status = 404, body = ErrorBody, description = "`links_disabled`: this server is not configured for the route; the message names the setting that enables it (`public_url` and `link_secret` in the engine config)."),
    ),
)]
pub(crate) async fn page(State(state): State<HttpState>, Path(token): Path<String>) -> Response {
    let claims = match verify(&state, &token) {
        Ok(claims) => claims,
        Err(error) if error.status == StatusCode::NOT_FOUND => return error.into_response(),
        Err(error) => return error_page(&error),
    };
    let what = describe(&claims);
    if is_critical(&state, &claims) {
        return html_page(
            StatusCode::OK,
            "These notifications cannot be switched off",
            &format!(
                "{what} are critical notices (such as security or billing) and are always sent."
            ),
            false,
        );
    }
    html_page(
        StatusCode::OK,
        "Unsubscribe?",
        &format!("Stop receiving {what}?"),
        true,
    )
}

/// RFC 8058's one-click POST (also the page's button).
#[utoipa::path(
    post,
    path = "/v1/unsubscribe/{token}",
    operation_id = "unsubscribe",
    summary = "One-click unsubscribe (RFC 8058)",
    description = "Switches the token's notification type off on its channel in the user's preferences. Public: the signed token in the path authenticates.",
    tags = ["public"],
    security(),
    params(TokenParam),
    request_body(content(
        (inline(OneClickForm) = "application/x-www-form-urlencoded"),
        (inline(OneClickForm) = "multipart/form-data"),
    )),
    responses(
        (status = 200, description = "Unsubscribed (idempotent: again is 200 again). JSON, or a page when the request accepts `text/html`.",
         content((UnsubscribeResult = "application/json"), (String = "text/html; charset=utf-8"))),
        (status = 400, description = "`invalid_link` (the token does not verify) or `bad_request` (a body other than `List-Unsubscribe=One-Click`). A page for HTML requests.",
         content((ErrorBody = "application/json"), (String = "text/html; charset=utf-8"))),
        (status = 404, body = ErrorBody,
         description = "`links_disabled`: this server is not configured for the route; the message names the setting that enables it (`public_url` and `link_secret` in the engine config)."),
        (status = 409, description = "`critical_type`: the type is critical and cannot be switched off.",
         content((ErrorBody = "application/json"), (String = "text/html; charset=utf-8"))),
        (status = 413, description = "A body over 16 KiB."),
        (status = 503, description = "`store_unavailable`: the preference store failed; retry later.",
         content((ErrorBody = "application/json"), (String = "text/html; charset=utf-8"))),
    ),
)]
pub(crate) async fn unsubscribe(
    State(state): State<HttpState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let wants_html = headers
        .get(ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    match apply(&state, &token, &headers, &body).await {
        Ok(claims) if wants_html => html_page(
            StatusCode::OK,
            "You are unsubscribed",
            &format!("You will no longer receive {}.", describe(&claims)),
            false,
        ),
        Ok(claims) => Json(UnsubscribeResult {
            unsubscribed: true,
            notification_type: claims.notification_type,
            channel: claims.channel,
        })
        .into_response(),
        Err(error) if wants_html && error.status != StatusCode::NOT_FOUND => error_page(&error),
        Err(error) => error.into_response(),
    }
}

/// The link's token, the path parameter of both routes.
#[derive(utoipa::IntoParams)]
#[into_params(names("token"), parameter_in = Path)]
#[expect(
    dead_code,
    reason = "documents the `Path<String>` both handlers extract"
)]
struct TokenParam(
    /// The signed token of the `List-Unsubscribe` link: it is the authority (no other auth).
    #[param(example = "dummy-token")]
    String,
);

/// The one-click body RFC 8058 defines, in either encoding it allows.
#[derive(utoipa::ToSchema)]
#[expect(
    dead_code,
    reason = "documents what `is_one_click` reads from either encoding"
)]
struct OneClickForm {
    #[schema(rename = "List-Unsubscribe", schema_with = one_click)]
    list_unsubscribe: String,
}

fn one_click() -> utoipa::openapi::Object {
    super::openapi::string_enum(["One-Click"])
}

/// The JSON answer of a one-click unsubscribe.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct UnsubscribeResult {
    #[schema(schema_with = super::openapi::always_true)]
    unsubscribed: bool,
    notification_type: String,
    channel: ChannelKind,
}

async fn apply(
    state: &HttpState,
    token: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<UnsubscribeClaims, ApiError> {
    let claims = verify(state, token)?;
    if !is_one_click(headers, body) {
        return Err(ApiError::bad_request(
            "the body must be `List-Unsubscribe=One-Click` (RFC 8058), \
             form-encoded or multipart/form-data",
        ));
    }
    let settings = state.settings.current();
    state
        .preferences
        .update(&claims.user_id, |prefs| {
            prefs.set_type_channel(
                &settings.defaults,
                &claims.notification_type,
                claims.channel,
                false,
            )
        })
        .await
        .map_err(|error| match error {
            PreferenceError::Critical { .. } => {
                ApiError::new(StatusCode::CONFLICT, "critical_type", error.to_string())
            }
            other => other.into(),
        })?;
    tracing::info!(
        notification_type = %claims.notification_type,
        channel = %claims.channel,
        issued_at = %claims.issued_at,
        "unsubscribed through a link"
    );
    Ok(claims)
}

fn verify(state: &HttpState, token: &str) -> Result<UnsubscribeClaims, ApiError> {
    let Some(links) = &state.unsubscribe else {
        return Err(ApiError::not_configured(
            "links_disabled",
            "unsubscribe links are not configured on this server: \
             set public_url and link_secret in the engine config",
        ));
    };
    links.verify_unsubscribe(token).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_link",
            format!("this unsubscribe link is not valid: {error}"),
        )
    })
}

fn is_critical(state: &HttpState, claims: &UnsubscribeClaims) -> bool {
    state
        .settings
        .current()
        .defaults
        .get(&claims.notification_type)
        .critical
}

fn describe(claims: &UnsubscribeClaims) -> String {
    // `in_app` reads better as "in-app".
    let channel = claims.channel.as_str().replace('_', "-");
    format!("“{}” notifications by {channel}", claims.notification_type)
}

/// Whether the body says `List-Unsubscribe=One-Click`, in either encoding
/// RFC 8058 allows. The content type picks the reader; anything that is not
/// multipart is read as a form, since the value is what matters.
fn is_one_click(headers: &HeaderMap, body: &[u8]) -> bool {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let is_multipart = content_type
        .split(';')
        .next()
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("multipart/form-data"));
    let value = if is_multipart {
        multipart_field(content_type, body, "List-Unsubscribe")
    } else {
        form::parse(body).ok().and_then(|pairs| {
            pairs
                .into_iter()
                .find(|(name, _)| name == "List-Unsubscribe")
                .map(|(_, value)| value)
        })
    };
    value.is_some_and(|value| value.trim() == "One-Click")
}

/// The value of the `multipart/form-data` part named `name`: just enough
/// of RFC 7578 for a one-field form.
fn multipart_field(content_type: &str, body: &[u8], name: &str) -> Option<String> {
    let boundary = content_type.split(';').skip(1).find_map(|parameter| {
        let (key, value) = parameter.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_owned())
    })?;
    let body = std::str::from_utf8(body).ok()?;
    let wanted = format!("name=\"{name}\"");
    body.split(format!("--{boundary}").as_str())
        .find_map(|part| {
            let (head, value) = part.split_once("\r\n\r\n")?;
            let named = head.lines().any(|line| {
                line.to_ascii_lowercase()
                    .starts_with("content-disposition:")
                    && line.contains(&wanted)
            });
            named.then(|| value.strip_suffix("\r\n").unwrap_or(value).to_owned())
        })
}

fn error_page(error: &ApiError) -> Response {
    html_page(
        error.status,
        "This link does not work",
        &error.message,
        false,
    )
}

/// A self-contained page: no scripts, no outside resources (so the token in
/// the URL goes nowhere in a `Referer`), not cached, not framed.
pub(super) fn html_page(
    status: StatusCode,
    title: &str,
    message: &str,
    with_button: bool,
) -> Response {
    // No `action`: the form posts to the page's own URL, whatever prefix a
    // proxy put in front of it.
    let button = if with_button {
        r#"<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click"><button type="submit">Unsubscribe</button></form>"#
    } else {
        ""
    };
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{title}</title></head>\
         <body style=\"font-family: sans-serif; max-width: 32rem; margin: 3rem auto; padding: 0 1rem\">\
         <h1>{title}</h1><p>{message}</p>{button}</body></html>\n",
        title = escape(title),
        message = escape(message),
    );
    let mut response = (status, Html(body)).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        ("cache-control", "no-store"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("x-robots-tag", "noindex"),
        (
            "content-security-policy",
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Type names come from applications' notify calls: escape everything.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        headers
    }

    #[test]
    fn reads_the_one_click_body_in_both_encodings() {
        let form = headers("application/x-www-form-urlencoded");
        assert!(is_one_click(&form, b"List-Unsubscribe=One-Click"));
        assert!(is_one_click(
            &HeaderMap::new(),
            b"List-Unsubscribe=One-Click"
        ));
        assert!(!is_one_click(&form, b""));
        assert!(!is_one_click(&form, b"List-Unsubscribe=Yes"));
        assert!(!is_one_click(&form, b"unsubscribe=One-Click"));

        let multipart = headers("multipart/form-data; boundary=\"xyz\"");
        let body = "--xyz\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--xyz--\r\n";
        assert!(is_one_click(&multipart, body.as_bytes()));
        let other = body.replace("List-Unsubscribe", "Other");
        assert!(!is_one_click(&multipart, other.as_bytes()));
        assert!(!is_one_click(
            &headers("multipart/form-data"),
            body.as_bytes()
        ));
    }

    #[test]
    fn pages_escape_what_they_show() {
        assert_eq!(
            escape("<b>\"x\" & 'y'</b>"),
            "&lt;b&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/b&gt;"
        );
    }
}
