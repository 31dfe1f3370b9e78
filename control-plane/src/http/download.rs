//! [`attachment`] and [`streamed`]: responses a browser saves as a file
//! (the inbox and activity exports, the privacy export, analytics CSV),
//! built in one place so every download carries the same headers.
//!
//! A streamed download starts once its writer flushed the first chunk: a
//! store that fails before that is an ordinary `503 store_unavailable`;
//! one that fails later aborts the body (see [`crate::chunks`]), so the
//! client sees a broken transfer, never a complete-looking file.

use axum::body::Body;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;

use super::ApiError;
use crate::chunks::{ChunkSink, Chunks, StreamError};

/// What every streamed download's operation says of its transfer.
pub(crate) const STREAMED: &str = "The body is streamed as it is read from storage (chunked transfer, memory bounded whatever the history's size). A storage failure before the first chunk is a 503; one after it aborts the transfer (the connection closes before the body's end), so a download that completes is the whole document — treat a broken transfer as a failure and retry.";

/// The `?format=` of a list export: one JSON array (the default) or CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum ListFormat {
    Json,
    Csv,
}

impl ListFormat {
    pub fn parse(format: Option<&str>) -> Result<Self, ApiError> {
        match format {
            None | Some("json") => Ok(ListFormat::Json),
            Some("csv") => Ok(ListFormat::Csv),
            Some(_) => Err(ApiError::bad_request("format: expected csv or json")),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ListFormat::Json => "application/json",
            ListFormat::Csv => "text/csv; charset=utf-8",
        }
    }

    /// `stem` with this format's extension.
    pub fn file_name(self, stem: &str) -> String {
        match self {
            ListFormat::Json => format!("{stem}.json"),
            ListFormat::Csv => format!("{stem}.csv"),
        }
    }
}

/// The `format` parameter of a list export, for a `#[utoipa::path]`'s
/// `params(…)`: the routes read it by hand with their other parameters,
/// then through [`ListFormat::parse`].
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(dead_code, reason = "documents what `ListFormat::parse` reads")]
pub(crate) struct FormatParam {
    /// The download's format; `json` when absent.
    // No `default = …`: utoipa wraps an inlined enum with a default in an
    // `allOf` that also says `type: object`, which no string fits.
    #[param(value_type = Option<ListFormat>, inline)]
    format: Option<String>,
}

/// Writes a streamed list export item by item: the JSON array's brackets
/// and commas, or the CSV header and rows.
pub struct ListWriter {
    format: ListFormat,
    first: bool,
}

impl ListWriter {
    /// Opens the list (`csv_header` ends with its line break).
    pub fn start(format: ListFormat, sink: &mut ChunkSink, csv_header: &str) -> Self {
        sink.write(match format {
            ListFormat::Json => b"[",
            ListFormat::Csv => csv_header.as_bytes(),
        });
        ListWriter {
            format,
            first: true,
        }
    }

    pub fn item<T: serde::Serialize>(
        &mut self,
        sink: &mut ChunkSink,
        item: &T,
        csv_row: impl FnOnce(&T) -> String,
    ) -> Result<(), StreamError> {
        match self.format {
            ListFormat::Csv => sink.write(csv_row(item).as_bytes()),
            ListFormat::Json => {
                sink.write(if self.first { b"\n" } else { b",\n" });
                sink.write_json(item)?;
            }
        }
        self.first = false;
        Ok(())
    }

    /// Closes the list.
    pub fn finish(self, sink: &mut ChunkSink) {
        if self.format == ListFormat::Json {
            sink.write(b"\n]\n");
        }
    }
}

/// `body` as a download: `Content-Type: content_type` and
/// `Content-Disposition: attachment; filename="file_name"`. The names
/// callers pass are fixed words, report names and dates; one that is no
/// header value (never the case today) is sent without a file name rather
/// than failing the download.
pub fn attachment(body: String, content_type: &'static str, file_name: &str) -> Response {
    with_headers(body.into_response(), content_type, file_name)
}

/// The document `chunks` carries as a download, sent chunk by chunk as
/// its writer produces it (see the module doc for failures).
pub async fn streamed(
    mut chunks: Chunks,
    content_type: &'static str,
    file_name: &str,
) -> Result<Response, ApiError> {
    let first = match chunks.next().await {
        None => None,
        Some(Ok(first)) => Some(first),
        Some(Err(aborted)) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                aborted.to_string(),
            ));
        }
    };
    let rest = chunks.into_stream();
    let body = match first {
        Some(first) => Body::from_stream(futures::stream::iter([Ok(first)]).chain(rest)),
        None => Body::empty(),
    };
    Ok(with_headers(body.into_response(), content_type, file_name))
}

fn with_headers(mut response: Response, content_type: &'static str, file_name: &str) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    headers.insert(header::CONTENT_DISPOSITION, disposition);
    response
}

#[cfg(test)]
mod tests {
    use http_body::Body as _;

    use super::*;
    use crate::chunks::{self, ChunkSink, StreamError};

    async fn frames(response: Response) -> Vec<Result<bytes::Bytes, String>> {
        let mut body = response.into_body();
        let mut frames = Vec::new();
        while let Some(frame) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
        {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        frames.push(Ok(data));
                    }
                }
                Err(error) => frames.push(Err(error.to_string())),
            }
        }
        frames
    }

    #[tokio::test]
    async fn a_failure_after_the_first_chunk_aborts_the_body() {
        let chunks = chunks::spawn(|mut sink| async move {
            sink.write(b"[1");
            sink.flush().await?;
            sink.write(b",2");
            Err::<ChunkSink, _>(StreamError::source("the store went away"))
        });
        let response = streamed(chunks, "application/json", "x.json")
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let frames = frames(response).await;
        assert_eq!(frames.len(), 2, "{frames:?}");
        assert_eq!(frames[0].as_deref().unwrap(), b"[1");
        let error = frames[1].as_ref().unwrap_err();
        assert!(error.contains("the store went away"), "{error}");
    }

    #[tokio::test]
    async fn a_failure_before_the_first_chunk_is_503() {
        let chunks = chunks::spawn(|_sink| async move {
            Err::<ChunkSink, _>(StreamError::source("the store is down"))
        });
        let response = streamed(chunks, "application/json", "x.json")
            .await
            .unwrap_err()
            .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
