//! Names for the answers many operations share (`components.responses`
//! in `hand_written.json`: every error body, with its code and headers),
//! so a handler's `#[utoipa::path]` can refer to them:
//! `(status = 400, response = responses::BadRequest)`, and the two every
//! admin or user operation gives (`401`, `503`) as one item:
//! `responses::AdminErrors` or `responses::UserErrors`.
//!
//! Only the name is used (the path refers to it with `$ref`); the answer
//! itself stays written once, in `hand_written.json`. A name with no entry
//! there is a dangling reference, which `tests/openapi.rs` refuses.

use std::collections::BTreeMap;

use utoipa::openapi::{Ref, RefOr, Response};

macro_rules! shared_responses {
    ($($name:ident),* $(,)?) => {$(
        pub(crate) struct $name;

        impl<'r> utoipa::ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (stringify!($name), RefOr::Ref(Ref::from_response_name(stringify!($name))))
            }
        }
    )*};
}

// A name joins the list when a described operation first needs it.
shared_responses!(
    BadRequest,
    NotFound,
    Conflict,
    UserUnauthorized,
    TooManyStreams,
    StreamUnavailable,
);

/// The two answers every operation behind the admin token, or behind a
/// user's token, gives: `401` (no token or a wrong one) and `503` (the
/// feature is off or the store failed), by the names of their entries.
macro_rules! token_errors {
    ($name:ident: $unauthorized:ident, $unavailable:ident) => {
        pub(crate) struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                BTreeMap::from([
                    (
                        "401".to_owned(),
                        RefOr::Ref(Ref::from_response_name(stringify!($unauthorized))),
                    ),
                    (
                        "503".to_owned(),
                        RefOr::Ref(Ref::from_response_name(stringify!($unavailable))),
                    ),
                ])
            }
        }
    };
}

token_errors!(AdminErrors: AdminUnauthorized, AdminUnavailable);
token_errors!(UserErrors: UserUnauthorized, UserUnavailable);
