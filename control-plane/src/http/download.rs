//! [`attachment`]: a response a browser saves as a file (the inbox and
//! activity exports, analytics CSV), built in one place so every download
//! carries the same headers.

use axum::http::header::{self, HeaderValue};
use axum::response::{IntoResponse, Response};

/// `body` as a download: `Content-Type: content_type` and
/// `Content-Disposition: attachment; filename="file_name"`. The names
/// callers pass are fixed words, report names and dates; one that is no
/// header value (never the case today) is sent without a file name rather
/// than failing the download.
pub fn attachment(body: String, content_type: &'static str, file_name: &str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    headers.insert(header::CONTENT_DISPOSITION, disposition);
    response
}
