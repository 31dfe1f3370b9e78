//! Which web pages may call the intake (`NUDGE_AGENT_CORS_ORIGINS`), and the
//! CORS headers browsers read.
//!
//! # What it promises
//!
//! * A request whose `Origin` is not allowed is refused before its body is
//!   read (`403 origin_not_allowed`, by the caller of [`check_origin`]). CORS
//!   alone would not stop it: analytics.js posts `text/plain`, a "simple"
//!   request that browsers send without a preflight, so the agent itself
//!   must refuse it.
//! * Answers on the public routes carry `Access-Control-Allow-Origin`: `*`
//!   when every origin is allowed (analytics.js sends no credentials, so `*`
//!   is enough), else the caller's own origin, when allowed, with
//!   `Vary: Origin` so that caches keep one answer per origin.
//! * `/v1/notify` never answers CORS: its preflight is refused and its
//!   answers carry no CORS header, so a page can neither send it with JSON
//!   or Basic auth (preflighted) nor read an answer. What stops a `text/plain`
//!   notify from a page is the trust rule (`super::trust`), not CORS.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::trust::Forbidden;
use crate::segment::{CallKind, Endpoint};

/// The pages allowed to call the public intake routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Any page (`*`).
    Any,
    /// Only these origins, in the form browsers send (`scheme://host[:port]`,
    /// lower case, no default port). Empty: no page at all.
    Only(Vec<String>),
}

impl AllowedOrigins {
    /// From the entries of `NUDGE_AGENT_CORS_ORIGINS`, each already checked by
    /// [`parse_origin`]; a `*` among them allows any page (start-up
    /// validation refuses `*` mixed with origins as a likely mistake).
    pub fn from_entries(entries: &[String]) -> Self {
        if entries.iter().any(|entry| entry == "*") {
            AllowedOrigins::Any
        } else {
            AllowedOrigins::Only(entries.iter().filter(|e| !e.is_empty()).cloned().collect())
        }
    }

    /// Whether a page of `origin` (an `Origin` header value) may call.
    pub fn allows(&self, origin: &HeaderValue) -> bool {
        match self {
            AllowedOrigins::Any => true,
            AllowedOrigins::Only(list) => origin.to_str().is_ok_and(|origin| {
                list.iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(origin))
            }),
        }
    }
}

/// One entry of `NUDGE_AGENT_CORS_ORIGINS`: `*`, or an origin as browsers
/// serialise it (`https://shop.example`, `http://localhost:3000`), which is
/// returned lower-cased and without a default port. Paths, a trailing
/// slash, user info and `null` are refused: browsers never send them in
/// `Origin`, so such an entry would silently match nothing (or, for `null`,
/// every sandboxed page).
pub fn parse_origin(entry: &str) -> Result<String, String> {
    let entry = entry.trim();
    if entry.is_empty() || entry == "*" {
        return Ok(entry.to_owned());
    }
    let problem = |why: &str| {
        Err(format!(
            "{entry:?} is not an origin ({why}); write scheme://host[:port], e.g. https://shop.example, or *"
        ))
    };
    if entry.eq_ignore_ascii_case("null") {
        return problem(
            "`null` is what sandboxed and file pages send; allowing it allows any of them",
        );
    }
    let lower = entry.to_ascii_lowercase();
    let Some((scheme, rest)) = lower.split_once("://") else {
        return problem("no scheme");
    };
    let default_port = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return problem("the scheme must be http or https"),
    };
    if rest.is_empty() {
        return problem("no host");
    }
    if rest.contains(['/', '?', '#', '@', ' ', ',']) {
        return problem("an origin has no path, query, user or trailing slash");
    }
    let host = rest.strip_suffix(default_port).unwrap_or(rest);
    let port = match host.strip_prefix('[') {
        // An IPv6 address: `[::1]` or `[::1]:8080`.
        Some(v6) => match v6.split_once(']') {
            Some((_, "")) => None,
            Some((_, after)) => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return problem("text after the IPv6 address"),
            },
            None => return problem("an IPv6 address needs its closing ]"),
        },
        None => host.split_once(':').map(|(_, port)| port),
    };
    if port.is_some_and(|port| port.parse::<u16>().is_err()) {
        return problem("the port is not a number");
    }
    Ok(format!("{scheme}://{host}"))
}

/// Whether browsers may call this endpoint at all (see the module doc).
pub(crate) fn open_to_browsers(endpoint: Endpoint) -> bool {
    endpoint != Endpoint::Call(CallKind::Notify)
}

/// Refuses a request from a page whose origin is not allowed. Requests
/// without `Origin` (servers) pass.
pub(crate) fn check_origin(allowed: &AllowedOrigins, headers: &HeaderMap) -> Result<(), Forbidden> {
    match headers.get(header::ORIGIN) {
        Some(origin) if !allowed.allows(origin) => Err(Forbidden::OriginNotAllowed {
            origin: String::from_utf8_lossy(origin.as_bytes()).into_owned(),
        }),
        _ => Ok(()),
    }
}

/// Adds the CORS answer headers for the request's `Origin` to `response`.
pub(crate) fn decorate(
    allowed: &AllowedOrigins,
    endpoint: Endpoint,
    request: &HeaderMap,
    response: &mut Response,
) {
    if !open_to_browsers(endpoint) {
        return;
    }
    let headers = response.headers_mut();
    let allow = match allowed {
        AllowedOrigins::Any => Some(HeaderValue::from_static("*")),
        AllowedOrigins::Only(_) => {
            // The answer depends on the Origin, allowed or not.
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
            request
                .get(header::ORIGIN)
                .filter(|origin| allowed.allows(origin))
                .cloned()
        }
    };
    if let Some(origin) = allow {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Retry-After"),
        );
    }
}

/// The answer to a CORS preflight (`OPTIONS`) on `endpoint`.
pub(crate) fn preflight(
    allowed: &AllowedOrigins,
    endpoint: Endpoint,
    request: &HeaderMap,
) -> Result<Response, Forbidden> {
    if !open_to_browsers(endpoint) {
        return Err(Forbidden::NotForBrowsers);
    }
    check_origin(allowed, request)?;
    let mut response = (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_METHODS, "POST, OPTIONS"),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "Content-Type, Authorization, Content-Encoding",
            ),
            (header::ACCESS_CONTROL_MAX_AGE, "86400"),
        ],
    )
        .into_response();
    decorate(allowed, endpoint, request, &mut response);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(entries: &[&str]) -> AllowedOrigins {
        let parsed: Vec<String> = entries.iter().map(|e| parse_origin(e).unwrap()).collect();
        AllowedOrigins::from_entries(&parsed)
    }

    #[test]
    fn origins_are_normalised_as_browsers_send_them() {
        assert_eq!(
            parse_origin("https://Shop.Example").unwrap(),
            "https://shop.example"
        );
        assert_eq!(
            parse_origin("https://shop.example:443").unwrap(),
            "https://shop.example"
        );
        assert_eq!(
            parse_origin("http://localhost:3000").unwrap(),
            "http://localhost:3000"
        );
        assert_eq!(
            parse_origin("http://[::1]:8080").unwrap(),
            "http://[::1]:8080"
        );
        assert_eq!(parse_origin("http://[::1]").unwrap(), "http://[::1]");
        assert_eq!(parse_origin("*").unwrap(), "*");
        for bad in [
            "shop.example",
            "ftp://shop.example",
            "https://shop.example/",
            "https://shop.example/path",
            "https://user@shop.example",
            "https://shop.example:port",
            "https://",
            "null",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_listed_origins_are_allowed() {
        let list = only(&["https://shop.example", "http://localhost:3000"]);
        let allows = |origin: &str| list.allows(&HeaderValue::from_str(origin).unwrap());
        assert!(allows("https://shop.example"));
        assert!(allows("http://localhost:3000"));
        assert!(!allows("https://evil.example"));
        assert!(
            !allows("http://shop.example"),
            "the scheme is part of the origin"
        );
        assert!(!allows("null"));
        assert!(only(&["*"]).allows(&HeaderValue::from_static("null")));
        assert!(!only(&[""]).allows(&HeaderValue::from_static("https://shop.example")));
    }
}
