//! The web inbox: a script an application adds with one tag, and two
//! pages the control plane serves itself.
//!
//! * `GET /inbox.js` — the widget (vanilla JS, no build step): a bell with
//!   the unread badge and a dropdown, kept live over the user's stream.
//! * `GET /inbox.css` — its styles, loaded into the widget's Shadow DOM.
//! * `GET /inbox` — a full inbox page; `GET /inbox/preferences` — the
//!   user's preferences. Both are static HTML that load `inbox.js`; the
//!   user's token travels in the URL fragment (`#access_token=…`), which
//!   never reaches a server or a log.
//!
//! The files are compiled in (`include_str!` from `control-plane/web/`),
//! so a binary serves exactly the widget it was built with. Each answer
//! carries a strong `ETag` (a hash of the content) and honours
//! `If-None-Match`. The pages are sent with a strict Content-Security-Policy:
//! scripts, styles and connections from this origin only, no inline script
//! or style, no framing.
//!
//! The widget runs on the application's own origin and calls `/v1/me/…`
//! across origins, so those routes answer CORS ([`cors`]): any origin, no
//! credentials. That is safe because they authenticate with a bearer token
//! only, never a cookie: an origin without the token gets nothing.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use super::HttpState;

/// The pages' policy: everything from this origin (`'self'` also covers
/// `ws:`/`wss:` to this host for the live stream), nothing inline.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Script and styles: cached for a few minutes, then revalidated by ETag,
/// so a new release reaches browsers within minutes.
const ASSET_CACHE: &str = "public, max-age=300";
/// Pages: revalidated on every load (cheap: a 304).
const PAGE_CACHE: &str = "no-cache";

struct Asset {
    body: &'static str,
    content_type: &'static str,
    cache: &'static str,
    page: bool,
    etag: OnceLock<HeaderValue>,
}

impl Asset {
    const fn new(body: &'static str, content_type: &'static str, page: bool) -> Self {
        Asset {
            body,
            content_type,
            cache: if page { PAGE_CACHE } else { ASSET_CACHE },
            page,
            etag: OnceLock::new(),
        }
    }

    fn etag(&self) -> &HeaderValue {
        self.etag.get_or_init(|| {
            let digest = Sha256::digest(self.body.as_bytes());
            let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a header value")
        })
    }

    fn serve(&self, request: &HeaderMap) -> Response {
        let etag = self.etag();
        let fresh = request
            .get(header::IF_NONE_MATCH)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                value
                    .split(',')
                    .any(|tag| tag.trim() == "*" || tag.trim().as_bytes() == etag.as_bytes())
            });
        let mut response = if fresh {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            self.body.into_response()
        };
        let headers = response.headers_mut();
        headers.insert(header::ETAG, etag.clone());
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(self.cache));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if !fresh {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            );
        }
        if self.page {
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(PAGE_CSP),
            );
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            headers.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
        } else {
            // Loaded by other origins' pages, possibly with
            // Cross-Origin-Embedder-Policy.
            headers.insert(
                "cross-origin-resource-policy",
                HeaderValue::from_static("cross-origin"),
            );
        }
        response
    }
}

static SCRIPT: Asset = Asset::new(
    include_str!("../../web/inbox.js"),
    "text/javascript; charset=utf-8",
    false,
);
static STYLES: Asset = Asset::new(
    include_str!("../../web/inbox.css"),
    "text/css; charset=utf-8",
    false,
);
static INBOX_PAGE: Asset = Asset::new(
    include_str!("../../web/inbox.html"),
    "text/html; charset=utf-8",
    true,
);
static PREFERENCES_PAGE: Asset = Asset::new(
    include_str!("../../web/preferences.html"),
    "text/html; charset=utf-8",
    true,
);

pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/inbox.js", get(script))
        .route("/inbox.css", get(styles))
        .route("/inbox", get(inbox_page))
        .route("/inbox/preferences", get(preferences_page))
}

/// A handler serving one compiled-in asset, with its operation: the same
/// for all four but for the route, the names and the content type.
macro_rules! asset_handler {
    (
        $handler:ident, $asset:ident, $path:literal, $operation:literal,
        $summary:literal, $content_type:literal, $description:literal $(,)?
    ) => {
        #[utoipa::path(
            get,
            path = $path,
            operation_id = $operation,
            summary = $summary,
            tags = ["web"],
            security(),
            params(("If-None-Match" = Option<String>, Header, nullable = false)),
            responses(
                (status = 200, content_type = $content_type, body = String,
                 headers(("ETag" = String)), description = $description),
                (status = 304, description = "Not modified (`If-None-Match` matched the `ETag`)."),
            ),
        )]
        pub(crate) async fn $handler(headers: HeaderMap) -> Response {
            $asset.serve(&headers)
        }
    };
}

asset_handler!(
    script,
    SCRIPT,
    "/inbox.js",
    "getInboxScript",
    "The web inbox widget",
    "text/javascript; charset=utf-8",
    "The widget script (compiled in; cached 5 minutes, then revalidated).",
);
asset_handler!(
    styles,
    STYLES,
    "/inbox.css",
    "getInboxStyles",
    "The widget's styles",
    "text/css; charset=utf-8",
    "The styles loaded into the widget's Shadow DOM.",
);
asset_handler!(
    inbox_page,
    INBOX_PAGE,
    "/inbox",
    "getInboxPage",
    "The full inbox page",
    "text/html; charset=utf-8",
    "Static HTML that loads `/inbox.js`; the user's token travels in the URL fragment \
     (`#access_token=…`). Strict Content-Security-Policy.",
);
asset_handler!(
    preferences_page,
    PREFERENCES_PAGE,
    "/inbox/preferences",
    "getPreferencesPage",
    "The preferences page",
    "text/html; charset=utf-8",
    "Static HTML that loads `/inbox.js`; token in the URL fragment. Strict \
     Content-Security-Policy.",
);

/// CORS for the end-user routes (`/v1/me/…`): answers preflights and marks
/// answers readable by any origin. Other routes pass untouched.
pub async fn cors(request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with("/v1/me/") {
        return next.run(request).await;
    }
    if request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, DELETE"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, last-event-id"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        return response;
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("content-disposition"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matching_etag_is_not_modified() {
        let plain = SCRIPT.serve(&HeaderMap::new());
        assert_eq!(plain.status(), StatusCode::OK);
        let etag = plain.headers()[header::ETAG].clone();
        assert_eq!(
            plain.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        let mut request = HeaderMap::new();
        request.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(SCRIPT.serve(&request).status(), StatusCode::NOT_MODIFIED);
    }

    #[test]
    fn pages_carry_the_policy_and_load_the_script_only() {
        for page in [&INBOX_PAGE, &PREFERENCES_PAGE] {
            let response = page.serve(&HeaderMap::new());
            assert_eq!(
                response.headers()[header::CONTENT_SECURITY_POLICY],
                PAGE_CSP
            );
            // No inline script or style: the policy would block it.
            assert!(!page.body.contains("<script>"));
            assert!(!page.body.contains("style="));
            assert!(page.body.contains(r#"src="/inbox.js""#));
        }
    }
}
