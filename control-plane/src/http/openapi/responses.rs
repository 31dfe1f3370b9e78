//! Names for the answers many operations share (`components.responses`
//! in `hand_written.json`: every error body, with its code and headers),
//! so a handler's `#[utoipa::path]` can refer to them:
//! `(status = 401, response = responses::UserUnauthorized)`.
//!
//! Only the name is used (the path refers to it with `$ref`); the answer
//! itself stays written once, in `hand_written.json`. A name with no entry
//! there is a dangling reference, which `tests/openapi.rs` refuses.

use utoipa::openapi::{RefOr, Response};

macro_rules! shared_responses {
    ($($name:ident),* $(,)?) => {$(
        pub(crate) struct $name;

        impl<'r> utoipa::ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (stringify!($name), RefOr::Ref(utoipa::openapi::Ref::from_response_name(stringify!($name))))
            }
        }
    )*};
}

// A name joins the list when a described operation first needs it.
shared_responses!(
    BadRequest,
    AdminUnauthorized,
    UserUnauthorized,
    NotFound,
    Conflict,
    AdminUnavailable,
    UserUnavailable,
);
