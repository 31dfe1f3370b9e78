//! Write keys: which application a call comes from, and whether it may send.
//!
//! Segment libraries send the key as the HTTP Basic user name with an empty
//! password (server libraries) or as `writeKey` in the body (analytics.js).
//! Keys are compared in plain: a write key identifies a source and ships in
//! browser code, it is not a secret.

use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The user name of an `Authorization: Basic` header. `Err` when a header is
/// present but is not Basic auth with base64 of `key:password`.
pub(crate) fn basic_write_key(headers: &HeaderMap) -> Result<Option<String>, &'static str> {
    const MALFORMED: &str =
        "the Authorization header must be HTTP Basic auth with the write key as user name";
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| MALFORMED)?.trim();
    let (scheme, credentials) = text.split_once(' ').ok_or(MALFORMED)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(MALFORMED);
    }
    let decoded = STANDARD.decode(credentials.trim()).map_err(|_| MALFORMED)?;
    let decoded = String::from_utf8(decoded).map_err(|_| MALFORMED)?;
    // Some clients omit the colon when the password is empty.
    let user = decoded
        .split_once(':')
        .map_or(decoded.as_str(), |(user, _)| user);
    Ok((!user.is_empty()).then(|| user.to_owned()))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn auth(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn basic_user_name_is_the_write_key() {
        let encoded = STANDARD.encode("key-1:");
        assert_eq!(
            basic_write_key(&auth(&format!("Basic {encoded}")))
                .unwrap()
                .as_deref(),
            Some("key-1")
        );
        let no_colon = STANDARD.encode("key-2");
        assert_eq!(
            basic_write_key(&auth(&format!("basic {no_colon}")))
                .unwrap()
                .as_deref(),
            Some("key-2")
        );
        assert_eq!(basic_write_key(&HeaderMap::new()).unwrap(), None);
        assert!(basic_write_key(&auth("Bearer abc")).is_err());
        assert!(basic_write_key(&auth("Basic !!!")).is_err());
    }
}
