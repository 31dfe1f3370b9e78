//! [`ServiceError`]: why a gRPC call failed, for both services, and the one
//! place it becomes a `tonic::Status` (`impl From<ServiceError> for Status`).
//!
//! The domain stores' errors convert into it here too, so handlers use `?`
//! and the mapping to codes cannot drift between RPCs:
//!
//! | error | code |
//! |---|---|
//! | bad input (refused before anything changed) | INVALID_ARGUMENT, naming the field |
//! | unknown name or id | NOT_FOUND |
//! | a file-defined type or rule; a delivery not dead-lettered; an erased user subscribed; a finished broadcast cancelled | FAILED_PRECONDITION |
//! | a broadcast id taken by other content | ALREADY_EXISTS |
//! | missing or wrong admin token | UNAUTHENTICATED |
//! | no admin token configured | UNAVAILABLE (like the HTTP admin routes' 503) |
//! | a store failed (retriable) | UNAVAILABLE + `retry-after-ms` |
//! | a stored record is unreadable | INTERNAL |

use std::time::Duration;

use tonic::Status;
use tonic::metadata::MetadataValue;

use crate::analytics::AnalyticsError;
use crate::catalog::CatalogError;
use crate::delivery::QueueError;
use crate::devices::DeviceError;
use crate::http::analytics_params::ParamError;
use crate::preferences::PreferenceError;
use crate::storage::StorageError;

/// How long a client should wait before retrying after a store failure.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a gRPC call failed; mapped to a status code in `From` below.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The store could not take the batch; retriable.
    #[error("store unavailable: {0}")]
    Store(#[from] StorageError),
    /// The blocking store task died (panic or runtime shutdown); retriable.
    #[error("store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// Another store (catalog, preferences, devices, queue) failed;
    /// retriable.
    #[error("{0}")]
    Unavailable(String),
    /// Bad input; the message starts with the field.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// An id taken by something else (a broadcast with other content).
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// No admin token is configured: no token a caller sends could be right.
    #[error("the management API is disabled: NUDGE_CP_ADMIN_TOKEN is not configured")]
    Disabled,
    /// A stored record is unreadable: retrying will not help.
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    /// Bad input in `field` (a proto field path, e.g. `type.channels`).
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> Self {
        if field.is_empty() {
            ServiceError::Invalid(message.to_string())
        } else {
            ServiceError::Invalid(format!("{field}: {message}"))
        }
    }
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Status {
        let message = error.to_string();
        match error {
            // Nothing was acknowledged or changed, so the caller retries;
            // the hint keeps a fleet of agents from hammering a struggling
            // store.
            ServiceError::Store(_) | ServiceError::Task(_) | ServiceError::Unavailable(_) => {
                let mut status = Status::unavailable(message);
                status.metadata_mut().insert(
                    "retry-after-ms",
                    MetadataValue::from(RETRY_AFTER.as_millis() as u64),
                );
                status
            }
            ServiceError::Invalid(_) => Status::invalid_argument(message),
            ServiceError::NotFound(_) => Status::not_found(message),
            ServiceError::FailedPrecondition(_) => Status::failed_precondition(message),
            ServiceError::AlreadyExists(_) => Status::already_exists(message),
            ServiceError::Unauthenticated(_) => Status::unauthenticated(message),
            ServiceError::Disabled => Status::unavailable(message),
            ServiceError::Internal(_) => Status::internal(message),
        }
    }
}

impl From<CatalogError> for ServiceError {
    fn from(error: CatalogError) -> Self {
        match error {
            CatalogError::InvalidType { name, error } => {
                let field = match error.field.as_ref() {
                    "" => "type.name".to_owned(),
                    field => format!("type.{field}"),
                };
                ServiceError::invalid(&field, format!("type {name:?}: {}", error.message))
            }
            CatalogError::InvalidRule(error) => ServiceError::invalid("rule", error),
            CatalogError::FileDefined { .. } => ServiceError::FailedPrecondition(error.to_string()),
            CatalogError::NotFound { .. } => ServiceError::NotFound(error.to_string()),
            CatalogError::Storage(_) => unavailable(&error),
            CatalogError::Corrupt(_) => internal(&error),
        }
    }
}

impl From<PreferenceError> for ServiceError {
    fn from(error: PreferenceError) -> Self {
        match error {
            PreferenceError::Storage(_) => unavailable(&error),
            PreferenceError::InvalidUser(message) => ServiceError::invalid("user_id", message),
            PreferenceError::Corrupt { .. } => internal(&error),
            PreferenceError::Critical { .. }
            | PreferenceError::TypeName { .. }
            | PreferenceError::TooManyTypes { .. } => {
                ServiceError::invalid("preferences.types", error)
            }
            PreferenceError::TimeZone { .. } => {
                ServiceError::invalid("preferences.timezone", error)
            }
            PreferenceError::QuietHoursTime { .. } => {
                ServiceError::invalid("preferences.quiet_hours", error)
            }
        }
    }
}

impl From<DeviceError> for ServiceError {
    fn from(error: DeviceError) -> Self {
        match error {
            DeviceError::Invalid(message) => ServiceError::Invalid(message),
            DeviceError::Storage(_) => unavailable(&error),
            DeviceError::Corrupt { .. } => internal(&error),
        }
    }
}

impl From<QueueError> for ServiceError {
    fn from(error: QueueError) -> Self {
        match error {
            QueueError::NotFound(_) => ServiceError::NotFound(error.to_string()),
            QueueError::InvalidTransition { .. } | QueueError::ClaimLost(_) => {
                ServiceError::FailedPrecondition(error.to_string())
            }
            QueueError::Storage(StorageError::Corrupt(_)) => internal(&error),
            QueueError::Storage(_) | QueueError::AlreadyExists(_) => unavailable(&error),
        }
    }
}

impl From<ParamError> for ServiceError {
    fn from(error: ParamError) -> Self {
        match error {
            ParamError::UnknownReport(_) => ServiceError::NotFound(error.to_string()),
            // The message starts with the parameter, the proto field's name.
            ParamError::Invalid { .. } => ServiceError::Invalid(error.to_string()),
        }
    }
}

/// Storage failures say nothing of the store: it is logged instead.
impl From<AnalyticsError> for ServiceError {
    fn from(error: AnalyticsError) -> Self {
        match error {
            AnalyticsError::Invalid { parameter, message } => {
                ServiceError::invalid(parameter, message)
            }
            AnalyticsError::Conflict | AnalyticsError::Store(_) => {
                tracing::error!(%error, "analytics storage failed in a grpc call");
                ServiceError::Unavailable("the analytics rollups could not be read".to_owned())
            }
            AnalyticsError::Corrupt(_) => {
                tracing::error!(%error, "unreadable analytics record in a grpc call");
                ServiceError::Internal("the analytics rollups could not be read".to_owned())
            }
        }
    }
}

fn unavailable(error: &dyn std::error::Error) -> ServiceError {
    tracing::error!(%error, "a store failed in a grpc call");
    ServiceError::Unavailable(error.to_string())
}

fn internal(error: &dyn std::error::Error) -> ServiceError {
    tracing::error!(%error, "unreadable record in a grpc call");
    ServiceError::Internal(error.to_string())
}
