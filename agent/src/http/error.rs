//! Every way intake refuses a request, mapped to an HTTP status and a JSON
//! body in one place.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::trust::Forbidden;
use crate::outbox::AppendError;
use crate::segment::SegmentError;

/// How long a client should wait before retrying while the agent stops.
/// Its replacement (or restart) usually listens again within seconds.
const SHUTDOWN_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The fixed set of refusal reasons: the `code` of error bodies and the
/// `reason` label of `nudge_agent_requests_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    MalformedJson,
    InvalidUtf8,
    InvalidGzip,
    BodyReadFailed,
    MissingIdentity,
    MissingField,
    InvalidField,
    PayloadTooLarge,
    UnsupportedMediaType,
    Unauthorized,
    OriginNotAllowed,
    ServerKeyRequired,
    ContactTraitRefused,
    OutboxFull,
    ShuttingDown,
    StorageError,
}

impl RejectReason {
    pub const ALL: [RejectReason; 16] = [
        RejectReason::MalformedJson,
        RejectReason::InvalidUtf8,
        RejectReason::InvalidGzip,
        RejectReason::BodyReadFailed,
        RejectReason::MissingIdentity,
        RejectReason::MissingField,
        RejectReason::InvalidField,
        RejectReason::PayloadTooLarge,
        RejectReason::UnsupportedMediaType,
        RejectReason::Unauthorized,
        RejectReason::OriginNotAllowed,
        RejectReason::ServerKeyRequired,
        RejectReason::ContactTraitRefused,
        RejectReason::OutboxFull,
        RejectReason::ShuttingDown,
        RejectReason::StorageError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MalformedJson => "malformed_json",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::InvalidGzip => "invalid_gzip",
            RejectReason::BodyReadFailed => "body_read_failed",
            RejectReason::MissingIdentity => "missing_identity",
            RejectReason::MissingField => "missing_field",
            RejectReason::InvalidField => "invalid_field",
            RejectReason::PayloadTooLarge => "payload_too_large",
            RejectReason::UnsupportedMediaType => "unsupported_media_type",
            RejectReason::Unauthorized => "unauthorized",
            RejectReason::OriginNotAllowed => "origin_not_allowed",
            RejectReason::ServerKeyRequired => "server_key_required",
            RejectReason::ContactTraitRefused => "contact_trait_refused",
            RejectReason::OutboxFull => "outbox_full",
            RejectReason::ShuttingDown => "shutting_down",
            RejectReason::StorageError => "storage_error",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            RejectReason::MalformedJson
            | RejectReason::InvalidUtf8
            | RejectReason::InvalidGzip
            | RejectReason::BodyReadFailed
            | RejectReason::MissingIdentity
            | RejectReason::MissingField
            | RejectReason::InvalidField => StatusCode::BAD_REQUEST,
            RejectReason::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RejectReason::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RejectReason::Unauthorized => StatusCode::UNAUTHORIZED,
            RejectReason::OriginNotAllowed
            | RejectReason::ServerKeyRequired
            | RejectReason::ContactTraitRefused => StatusCode::FORBIDDEN,
            RejectReason::OutboxFull | RejectReason::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RejectReason::StorageError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A refused intake request. Nothing of it was appended to the outbox.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("request body exceeds the limit of {limit} bytes for {what}")]
    PayloadTooLarge { limit: usize, what: &'static str },
    #[error("request body is not valid gzip: {0}")]
    InvalidGzip(String),
    #[error("could not read the request body: {0}")]
    BodyReadFailed(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Browser and trust rules (`super::trust`, `super::cors`).
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    #[error("the agent's outbox is full; retry after {} s", retry_after_secs(*.retry_after))]
    OutboxFull { retry_after: Duration },
    #[error(
        "the agent is shutting down; retry after {} s",
        retry_after_secs(SHUTDOWN_RETRY_AFTER)
    )]
    ShuttingDown,
    /// The detail is logged, not sent: it describes the agent's disk.
    #[error("the agent could not store the call; it was not accepted")]
    Storage(String),
}

impl IntakeError {
    pub fn reason(&self) -> RejectReason {
        match self {
            IntakeError::Segment(error) => match error {
                SegmentError::InvalidUtf8 { .. } => RejectReason::InvalidUtf8,
                SegmentError::MalformedJson { .. } => RejectReason::MalformedJson,
                SegmentError::MissingIdentity { .. } => RejectReason::MissingIdentity,
                SegmentError::MissingField { .. } => RejectReason::MissingField,
                SegmentError::InvalidField { .. } => RejectReason::InvalidField,
                SegmentError::CallTooLarge { .. } | SegmentError::BodyTooLarge { .. } => {
                    RejectReason::PayloadTooLarge
                }
            },
            IntakeError::UnsupportedMediaType(_) => RejectReason::UnsupportedMediaType,
            IntakeError::PayloadTooLarge { .. } => RejectReason::PayloadTooLarge,
            IntakeError::InvalidGzip(_) => RejectReason::InvalidGzip,
            IntakeError::BodyReadFailed(_) => RejectReason::BodyReadFailed,
            IntakeError::Unauthorized(_) => RejectReason::Unauthorized,
            IntakeError::Forbidden(forbidden) => match forbidden {
                Forbidden::OriginNotAllowed { .. } => RejectReason::OriginNotAllowed,
                Forbidden::ServerKeyRequired { .. } | Forbidden::NotForBrowsers => {
                    RejectReason::ServerKeyRequired
                }
                Forbidden::ContactTrait { .. } => RejectReason::ContactTraitRefused,
            },
            IntakeError::OutboxFull { .. } => RejectReason::OutboxFull,
            IntakeError::ShuttingDown => RejectReason::ShuttingDown,
            IntakeError::Storage(_) => RejectReason::StorageError,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            IntakeError::OutboxFull { retry_after } => Some(*retry_after),
            IntakeError::ShuttingDown => Some(SHUTDOWN_RETRY_AFTER),
            _ => None,
        }
    }
}

impl From<AppendError> for IntakeError {
    fn from(error: AppendError) -> Self {
        match error {
            AppendError::QuotaFull { retry_after, .. } => IntakeError::OutboxFull { retry_after },
            AppendError::ShuttingDown => IntakeError::ShuttingDown,
            AppendError::Storage(detail) => IntakeError::Storage(detail),
        }
    }
}

/// Whole seconds for `Retry-After`, rounded up and at least 1 so that a
/// client never retries in a tight loop.
fn retry_after_secs(duration: Duration) -> u64 {
    let whole = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    whole.max(1)
}

/// The error body Segment libraries understand: they read `code` and
/// `message` at the top level.
#[derive(serde::Serialize)]
struct ErrorBody {
    success: bool,
    code: &'static str,
    message: String,
}

impl IntoResponse for IntakeError {
    fn into_response(self) -> Response {
        let reason = self.reason();
        let body = ErrorBody {
            success: false,
            code: reason.as_str(),
            message: self.to_string(),
        };
        let mut response = (reason.status(), Json(body)).into_response();
        if let Some(retry_after) = self.retry_after() {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(retry_after)),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_are_unique_and_match_segment_codes() {
        let mut codes: Vec<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), RejectReason::ALL.len());

        let at = crate::segment::At::Batch;
        let segment_errors = [
            SegmentError::InvalidUtf8 { offset: 0 },
            SegmentError::MalformedJson {
                detail: String::new(),
            },
            SegmentError::MissingIdentity { at, required: "x" },
            SegmentError::MissingField { at, field: "x" },
            SegmentError::invalid(at, "x", "y"),
            SegmentError::CallTooLarge {
                at,
                size: 2,
                limit: 1,
            },
            SegmentError::BodyTooLarge { size: 2, limit: 1 },
        ];
        for error in segment_errors {
            let code = error.code();
            assert_eq!(IntakeError::from(error).reason().as_str(), code);
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(30)), 30);
    }
}
