//! Why a Segment (or Nudge) call was refused, with a stable machine code.

use std::fmt;

use super::CallKind;

/// Where in a request a problem was found, so that messages name the call
/// and, in a batch, the item index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// A single call posted to its own endpoint.
    Call(CallKind),
    /// The top level of a `/v1/batch` body.
    Batch,
    /// One item of a batch; `kind` is `None` until its `type` is known.
    Item {
        index: usize,
        kind: Option<CallKind>,
    },
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::Call(kind) => write!(f, "{} call", kind.name()),
            At::Batch => f.write_str("batch request"),
            At::Item { index, kind: None } => write!(f, "batch item {index}"),
            At::Item {
                index,
                kind: Some(kind),
            } => write!(f, "batch item {index} ({})", kind.name()),
        }
    }
}

/// A refused call. Nothing of the request is kept when one is returned.
///
/// `code()` is part of the API (clients and the `reason` label of
/// `nudge_agent_requests_rejected_total` read it); messages are for humans
/// and say which field, in which call or batch item, was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("request body is not valid UTF-8 (first invalid byte at offset {offset})")]
    InvalidUtf8 { offset: usize },
    #[error("request body is not valid JSON: {detail}")]
    MalformedJson { detail: String },
    #[error("{at}: {required} is required")]
    MissingIdentity { at: At, required: &'static str },
    #[error("{at}: `{field}` is required")]
    MissingField { at: At, field: &'static str },
    #[error("{at}: `{field}` {problem}")]
    InvalidField {
        at: At,
        field: String,
        problem: String,
    },
    #[error("{at}: its JSON is {size} bytes, over the limit of {limit} bytes per call")]
    CallTooLarge { at: At, size: usize, limit: usize },
    #[error("request body is {size} bytes, over the limit of {limit} bytes")]
    BodyTooLarge { size: usize, limit: usize },
}

impl SegmentError {
    /// The stable machine-readable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            SegmentError::InvalidUtf8 { .. } => "invalid_utf8",
            SegmentError::MalformedJson { .. } => "malformed_json",
            SegmentError::MissingIdentity { .. } => "missing_identity",
            SegmentError::MissingField { .. } => "missing_field",
            SegmentError::InvalidField { .. } => "invalid_field",
            SegmentError::CallTooLarge { .. } | SegmentError::BodyTooLarge { .. } => {
                "payload_too_large"
            }
        }
    }

    pub(crate) fn invalid(at: At, field: impl Into<String>, problem: impl Into<String>) -> Self {
        SegmentError::InvalidField {
            at,
            field: field.into(),
            problem: problem.into(),
        }
    }
}
