//! The engagement tracking routes behind the links in HTML emails (public,
//! no admin token: the signed token in the path is the authority; see
//! [`crate::links::tracking`]).
//!
//! * `GET /v1/t/open/{token}.gif` — the open pixel: always a 1×1
//!   transparent GIF that no cache keeps, so mail renders whatever happens.
//!   A token this server signed records [`Engagement::Opened`] on its
//!   delivery (when `[tracking] opens` is on); a forged, altered or unknown
//!   one records nothing, and neither does a `HEAD`.
//! * `GET /v1/t/click/{token}` — a tracked link: `302 Found` to the
//!   destination signed into the token, after recording
//!   [`Engagement::Clicked`] (when `[tracking] clicks` is on, and on `GET`
//!   only: a `HEAD` is a link checker). A token that does not verify is a
//!   `400` page and **never a redirect**: the only destinations are the
//!   ones this server signed (no open redirect).
//!   Without `public_url` the route answers `404 links_disabled` (JSON).
//!
//! Recording never stands in the way of the answer: a delivery that is
//! gone, not sent, or failed, or a store that fails, is logged and the
//! pixel or redirect is served all the same.
//!
//! Known limits of any pixel and redirect tracking: mail privacy features
//! (Apple Mail Privacy Protection, image proxies) load pixels without a
//! human opening anything, blocked images hide real opens, and link
//! scanners (Safe Links and the like) follow links before the recipient
//! does. Opens are a signal, not proof; clicks are better.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, EXPIRES, LOCATION, PRAGMA};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jiff::Timestamp;
use uuid::Uuid;

use super::public_links::html_page;
use super::{ApiError, ErrorBody, HttpState};
use crate::delivery::{DeliveryQueue, Engagement, QueueError};

/// A 1×1 transparent GIF (GIF89a, one transparent pixel).
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x01, 0x44, 0x00, 0x3b,
];

pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/v1/t/open/{token}", get(open))
        .route("/v1/t/click/{token}", get(click))
}

/// The open pixel; records the open when the token is ours.
#[utoipa::path(
    get,
    path = "/v1/t/open/{token}",
    operation_id = "trackOpen",
    summary = "The email open pixel",
    description = "Records `opened` on the delivery when the token is signed by this server and `[tracking] opens` is on; a `HEAD` records nothing. Public: the signed token authenticates.",
    tags = ["public", "tracking"],
    security(),
    params(
        ("token" = String, Path, description = "The signed open token followed by `.gif`.", example = "dummy.gif"),
    ),
    responses(
        (status = 200, content_type = "image/gif", body = inline(Pixel),
         description = "Always a 1×1 transparent GIF, never cached, whatever the token (a forged one records nothing)."),
    ),
)]
pub(crate) async fn open(
    State(state): State<HttpState>,
    method: Method,
    Path(token): Path<String>,
) -> Pixel {
    if let Some(links) = &state.tracking {
        match links.verify_open(&token) {
            // A HEAD is a checker asking about the image, not a client showing it.
            Ok(id) if links.opens() && method == Method::GET => {
                record(&state.queue, id, Engagement::Opened).await;
            }
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%error, "open pixel with a token that does not verify; nothing recorded");
            }
        }
    }
    Pixel
}

/// A tracked link: verify, record, redirect.
#[utoipa::path(
    get,
    path = "/v1/t/click/{token}",
    operation_id = "trackClick",
    summary = "A tracked link",
    description = "Records `clicked` (when `[tracking] clicks` is on, on `GET` only: a `HEAD` is a link checker), then redirects. Only destinations this server signed: no open redirect. Public: the signed token authenticates.",
    tags = ["public", "tracking"],
    security(),
    params(
        ("token" = String, Path, description = "The signed click token.", example = "dummy-token"),
    ),
    responses(
        (status = 302, description = "To the destination signed into the token (`Cache-Control: no-store`, `Referrer-Policy: no-referrer`).",
         headers(("Location" = String, description = "The destination (an absolute URL)."))),
        (status = 400, content_type = "text/html; charset=utf-8", body = String,
         description = "A page, never a redirect: the token does not verify (`invalid_link`)."),
        (status = 404, body = ErrorBody,
         description = "`links_disabled`: this server is not configured for the route; the message names the setting that enables it (`public_url` and `link_secret` in the engine config)."),
    ),
)]
pub(crate) async fn click(
    State(state): State<HttpState>,
    method: Method,
    Path(token): Path<String>,
) -> Response {
    let Some(links) = &state.tracking else {
        // JSON, not a page: it is for the operator, like every unconfigured route.
        return ApiError::not_configured(
            "links_disabled",
            "tracking links are not configured on this server: \
             set public_url and link_secret in the engine config",
        )
        .into_response();
    };
    let claims = match links.verify_click(&token) {
        Ok(claims) => claims,
        Err(error) => {
            tracing::info!(%error, "click link that does not verify; not redirected");
            return error_page(&ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_link",
                format!("this link is not valid: {error}"),
            ));
        }
    };
    // A HEAD is a link checker, not someone following the link.
    if links.clicks() && method == Method::GET {
        record(&state.queue, claims.delivery_id, Engagement::Clicked).await;
    }
    // `is_trackable` allowed visible ASCII only, so this cannot fail; a
    // page beats a panic should it ever.
    let Ok(location) = HeaderValue::from_str(&claims.destination) else {
        return error_page(&ApiError::bad_request(
            "this link's destination is unusable",
        ));
    };
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    headers.insert(LOCATION, location);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

/// Records `kind` on delivery `id`; whatever goes wrong is only logged.
async fn record(queue: &DeliveryQueue, id: Uuid, kind: Engagement) {
    let recorded = queue.record_engagement(id, kind, Timestamp::now()).await;
    match recorded {
        Ok(delivery) => {
            tracing::debug!(delivery = %id, engagement = kind.as_str(), status = %delivery.status, "engagement recorded");
        }
        Err(QueueError::NotFound(_)) => {
            tracing::info!(delivery = %id, engagement = kind.as_str(), "engagement for a delivery that is gone; not recorded");
        }
        Err(QueueError::InvalidTransition { from, .. }) => {
            tracing::info!(delivery = %id, engagement = kind.as_str(), status = %from, "engagement the delivery cannot take; not recorded");
        }
        Err(error) => {
            tracing::warn!(delivery = %id, engagement = kind.as_str(), %error, "engagement not recorded: the delivery queue failed");
        }
    }
}

/// The open route's answer: [`PIXEL`], with headers no cache keeps.
pub(crate) struct Pixel;

impl IntoResponse for Pixel {
    fn into_response(self) -> Response {
        let mut response = (StatusCode::OK, PIXEL).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("image/gif"));
        headers.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("no-store, no-cache, must-revalidate, max-age=0, private"),
        );
        headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        headers.insert(EXPIRES, HeaderValue::from_static("0"));
        response
    }
}

/// Its schema: bytes of a GIF (`contentMediaType`), not a JSON value.
impl utoipa::PartialSchema for Pixel {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("image/gif")
            .into()
    }
}

impl utoipa::ToSchema for Pixel {}

fn error_page(error: &ApiError) -> Response {
    html_page(
        error.status,
        "This link does not work",
        &error.message,
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pixel_is_a_one_by_one_gif() {
        assert!(PIXEL.starts_with(b"GIF89a"));
        assert_eq!(&PIXEL[6..10], &[1, 0, 1, 0], "width and height 1");
        assert_eq!(PIXEL.last(), Some(&0x3b), "trailer");
    }
}
