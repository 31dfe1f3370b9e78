//! Names for the answers many operations share (`components.responses`
//! in `hand_written.json`: every error body, with its code and headers),
//! so a handler's `#[utoipa::path]` can refer to them:
//! `(status = 400, response = responses::BadRequest)`, and the two every
//! admin or user operation gives (`401`, `503`) as one item:
//! `responses::AdminErrors` or `responses::UserErrors` (and the live
//! stream's three, `responses::StreamErrors`).
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
shared_responses!(BadRequest, NotFound, Conflict);

/// A group of answers several operations all give, by status and the
/// name of their entry: one item in a `#[utoipa::path]`'s `responses`.
macro_rules! answer_group {
    ($(#[$doc:meta])* $name:ident: $($status:literal => $entry:ident),+ $(,)?) => {
        $(#[$doc])*
        pub(crate) struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                BTreeMap::from([$((
                    $status.to_owned(),
                    RefOr::Ref(Ref::from_response_name(stringify!($entry))),
                )),+])
            }
        }
    };
}

answer_group!(
    /// Every operation behind the admin token: `401` (no token or a wrong
    /// one) and `503` (none configured, or the store failed).
    AdminErrors: "401" => AdminUnauthorized, "503" => AdminUnavailable
);
answer_group!(
    /// Every operation behind a user's token: `401` and `503`, as above.
    UserErrors: "401" => UserUnauthorized, "503" => UserUnavailable
);
answer_group!(
    /// Both live stream transports: `401` (no or a wrong token or ticket),
    /// `429` (the user's streams are at their cap), `503` (every stream
    /// slot is taken, or the store failed).
    StreamErrors:
        "401" => UserUnauthorized,
        "429" => TooManyStreams,
        "503" => StreamUnavailable,
);
