//! The path parameters several operations share, each described once as
//! an `IntoParams` type that a `#[utoipa::path]` names (`params(UserId)`,
//! or `params(UserId, DeviceId)` for a path with both). Handlers extract
//! them as plain strings (`Path<String>`), so these types are never built;
//! `tests/openapi.rs` checks that every operation declares exactly the
//! names of its path template.
//!
//! A parameter only one module's routes take is described there, beside
//! its handlers, the same way.

#![expect(
    dead_code,
    reason = "documentation types: the handlers extract the strings"
)]

use utoipa::IntoParams;

#[derive(IntoParams)]
#[into_params(names("user_id"), parameter_in = Path)]
pub(crate) struct UserId(
    /// The application's user id.
    #[param(example = "u123")]
    String,
);

#[derive(IntoParams)]
#[into_params(names("device_id"), parameter_in = Path)]
pub(crate) struct DeviceId(
    /// A device id (as listed).
    #[param(example = "dummy-device")]
    String,
);

#[derive(IntoParams)]
#[into_params(names("topic"), parameter_in = Path)]
pub(crate) struct Topic(
    /// A topic name: 1 to 128 characters of A-Z a-z 0-9 _ . : - / @.
    #[param(pattern = "^[A-Za-z0-9_.:/@-]{1,128}$", example = "news")]
    String,
);

/// A topic's subscriber, whose id is checked as a stored user id is.
#[derive(IntoParams)]
#[into_params(names("user_id"), parameter_in = Path)]
pub(crate) struct SubscriberId(
    /// The application's user id: 1 to 1,024 bytes, no NUL.
    #[param(pattern = "^[^\\u0000]{1,256}$", example = "u123")]
    String,
);

#[derive(IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
pub(crate) struct BroadcastId(
    /// The broadcast's id (the caller's idempotency key).
    #[param(example = "spring-sale")]
    String,
);

#[cfg(test)]
mod tests {
    use super::*;

    /// `Topic`'s pattern is a literal (utoipa takes no expression there):
    /// it must be the rule topic names are checked by.
    #[test]
    fn the_topic_pattern_is_the_checked_rule() {
        let parameters = Topic::into_params(|| None);
        let schema = serde_json::to_value(&parameters[0]).unwrap();
        assert_eq!(
            schema["schema"]["pattern"],
            crate::broadcasts::name_pattern()
        );
    }
}
