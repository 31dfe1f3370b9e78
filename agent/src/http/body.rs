//! Reading an intake body: media type, `Content-Encoding`, and size limits
//! that hold before and after decompression.

use std::future::poll_fn;
use std::io::Read;
use std::pin::Pin;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderMap, header};
use flate2::read::MultiGzDecoder;

use super::error::IntakeError;

/// Accepts `application/json` and `text/plain` (analytics.js sends
/// `text/plain` so browsers skip the CORS preflight), with no charset or
/// UTF-8. A missing `Content-Type` is read as JSON: some Segment libraries
/// and hand-written `curl` calls omit it, and the body is validated as JSON
/// either way.
pub(crate) fn check_content_type(headers: &HeaderMap) -> Result<(), IntakeError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let refuse = || {
        IntakeError::UnsupportedMediaType(format!(
            "Content-Type {:?} is not supported; send application/json or text/plain (UTF-8)",
            String::from_utf8_lossy(value.as_bytes())
        ))
    };
    let text = value.to_str().map_err(|_| refuse())?;
    let mut parts = text.split(';').map(str::trim);
    let essence = parts.next().unwrap_or_default();
    if !essence.eq_ignore_ascii_case("application/json")
        && !essence.eq_ignore_ascii_case("text/plain")
    {
        return Err(refuse());
    }
    for parameter in parts.filter(|part| !part.is_empty()) {
        let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        if name.trim().eq_ignore_ascii_case("charset") {
            let charset = value.trim().trim_matches('"');
            if !charset.eq_ignore_ascii_case("utf-8") && !charset.eq_ignore_ascii_case("utf8") {
                return Err(refuse());
            }
        }
    }
    Ok(())
}

/// How the body is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Identity,
    Gzip,
}

pub(crate) fn content_encoding(headers: &HeaderMap) -> Result<Encoding, IntakeError> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(Encoding::Identity);
    };
    match value.to_str().map(str::trim) {
        Ok(text) if text.is_empty() || text.eq_ignore_ascii_case("identity") => {
            Ok(Encoding::Identity)
        }
        Ok(text) if text.eq_ignore_ascii_case("gzip") || text.eq_ignore_ascii_case("x-gzip") => {
            Ok(Encoding::Gzip)
        }
        _ => Err(IntakeError::UnsupportedMediaType(format!(
            "Content-Encoding {:?} is not supported; send gzip or no encoding",
            String::from_utf8_lossy(value.as_bytes())
        ))),
    }
}

/// Bytes of an oversized body read and thrown away before answering `413`.
///
/// Answering while the client is still sending makes hyper close the
/// connection with the body unread, and many clients (hyper, reqwest,
/// Python's requests) then report a broken connection instead of the `413`.
/// Draining a bounded amount lets ordinary oversized calls see the real
/// answer; a body beyond this bound gets the connection closed on it.
const DRAIN_LIMIT: usize = 8 << 20;

/// Reads the whole body, refusing it once it exceeds `limit` bytes (or
/// announces so in `Content-Length`), without buffering the excess.
pub(crate) async fn read_limited(
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
    what: &'static str,
) -> Result<Bytes, IntakeError> {
    let too_large = IntakeError::PayloadTooLarge { limit, what };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<u64>().ok());
    if announced.is_some_and(|length| length > limit as u64) {
        discard(body, DRAIN_LIMIT).await;
        return Err(too_large);
    }
    let mut buffer = Vec::with_capacity(announced.map_or(0, |length| length as usize));
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|error| IntakeError::BodyReadFailed(error.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing intake uses
        };
        if buffer.len() + data.len() > limit {
            discard(body, DRAIN_LIMIT.saturating_sub(buffer.len())).await;
            return Err(too_large);
        }
        buffer.extend_from_slice(&data);
    }
    Ok(Bytes::from(buffer))
}

/// Reads and drops up to `budget` more bytes of `body` (see [`DRAIN_LIMIT`]).
async fn discard(mut body: Body, mut budget: usize) {
    while budget > 0 {
        match poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            Some(Ok(frame)) => {
                let read = frame.data_ref().map_or(0, |data| data.len());
                budget = budget.saturating_sub(read);
            }
            Some(Err(_)) | None => return,
        }
    }
}

/// Decompresses a gzip body, never producing more than `limit` bytes: a
/// small body that inflates to gigabytes is refused after `limit + 1`.
pub(crate) fn gunzip(
    compressed: &[u8],
    limit: usize,
    what: &'static str,
) -> Result<Bytes, IntakeError> {
    let mut inflated = Vec::new();
    MultiGzDecoder::new(compressed)
        .take(limit as u64 + 1)
        .read_to_end(&mut inflated)
        .map_err(|error| IntakeError::InvalidGzip(error.to_string()))?;
    if inflated.len() > limit {
        return Err(IntakeError::PayloadTooLarge { limit, what });
    }
    Ok(Bytes::from(inflated))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use axum::http::HeaderValue;
    use flate2::{Compression, write::GzEncoder};

    use super::*;

    fn with(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn content_types() {
        assert!(check_content_type(&HeaderMap::new()).is_ok());
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;charset=\"UTF-8\"",
            "text/plain",
            "text/plain;charset=UTF-8",
        ] {
            assert!(
                check_content_type(&with(header::CONTENT_TYPE, ok)).is_ok(),
                "{ok}"
            );
        }
        for refused in [
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/plain; charset=iso-8859-1",
            "application/jsonx",
        ] {
            let error = check_content_type(&with(header::CONTENT_TYPE, refused)).unwrap_err();
            assert_eq!(
                error.reason().as_str(),
                "unsupported_media_type",
                "{refused}"
            );
        }
    }

    #[test]
    fn content_encodings() {
        assert_eq!(
            content_encoding(&HeaderMap::new()).unwrap(),
            Encoding::Identity
        );
        assert_eq!(
            content_encoding(&with(header::CONTENT_ENCODING, "GZIP")).unwrap(),
            Encoding::Gzip
        );
        assert!(content_encoding(&with(header::CONTENT_ENCODING, "br")).is_err());
    }

    #[test]
    fn gunzip_bounds_the_inflated_size() {
        let small = gzip(b"{\"a\":1}");
        assert_eq!(&gunzip(&small, 100, "x").unwrap()[..], b"{\"a\":1}");

        let bomb = gzip(&vec![b' '; 10 * 1024 * 1024]);
        assert!(bomb.len() < 32 * 1024, "the bomb compresses well");
        let error = gunzip(&bomb, 32 * 1024, "x").unwrap_err();
        assert_eq!(error.reason().as_str(), "payload_too_large");

        let error = gunzip(b"not gzip at all", 100, "x").unwrap_err();
        assert_eq!(error.reason().as_str(), "invalid_gzip");
    }

    #[tokio::test]
    async fn read_limited_refuses_oversized_bodies() {
        let headers = HeaderMap::new();
        let body = Body::from(vec![b'x'; 11]);
        assert!(read_limited(&headers, body, 10, "x").await.is_err());
        let body = Body::from(vec![b'x'; 10]);
        assert_eq!(
            read_limited(&headers, body, 10, "x").await.unwrap().len(),
            10
        );

        let lying = with(header::CONTENT_LENGTH, "1000000");
        let error = read_limited(&lying, Body::empty(), 10, "x")
            .await
            .unwrap_err();
        assert_eq!(error.reason().as_str(), "payload_too_large");
    }
}
