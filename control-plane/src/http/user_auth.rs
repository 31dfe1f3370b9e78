//! End-user authentication for the `/v1/me/…` routes.
//!
//! The application's backend signs a JSON Web Token for its signed-in user
//! with a secret it shares with the control plane
//! (`NUDGE_CP_USER_TOKEN_SECRET`): HS256, `sub` = the user id, `exp`
//! required (`nbf` honoured when present), with [`LEEWAY_SECONDS`] for clock skew.
//! The browser sends it as `Authorization: Bearer <token>`; the live
//! stream, which browsers open without headers (WebSocket, EventSource),
//! may pass it as `?access_token=` instead ([`MeStream`]).
//!
//! Only HS256 is accepted: the algorithm in the token's header is checked
//! against it, never trusted (no `none`, no RS/HS confusion). Every refusal
//! is a `401 invalid_token` whose message says what was wrong; when no
//! secret is configured the routes answer `503 user_auth_disabled`.

use std::fmt;

use axum::extract::{FromRequestParts, Query};
use axum::http::StatusCode;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::{ApiError, HttpState};

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECONDS: i64 = 60;
/// Shortest secret accepted: HS256 wants at least the hash's 32 bytes.
pub const MIN_SECRET_BYTES: usize = 32;
/// Longest token read; a token is a few hundred bytes.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest user id accepted in `sub`.
const MAX_USER_ID_BYTES: usize = 512;

/// The shared HS256 secret. Never printed.
#[derive(Clone)]
pub struct UserTokenSecret(Vec<u8>);

impl fmt::Debug for UserTokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UserTokenSecret(<redacted>)")
    }
}

impl std::str::FromStr for UserTokenSecret {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "must be at least {MIN_SECRET_BYTES} bytes (HS256 needs a 256-bit key)"
            ));
        }
        Ok(UserTokenSecret(text.as_bytes().to_vec()))
    }
}

impl UserTokenSecret {
    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.0).expect("hmac takes any key length")
    }

    /// Signs `claims` (a JSON object) as an HS256 token: what an
    /// application's backend does; here for tests and tools.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    /// The user id of a valid `token` at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<String, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed("longer than 8 KiB"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("not three dot-separated parts"));
        };
        let header: Header = decode_part(header)?;
        if header.alg != "HS256" {
            return Err(TokenError::Algorithm(header.alg));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
        let mut mac = self.mac();
        mac.update(&token.as_bytes()[..header_and_payload_len(token)]);
        // `verify_slice` compares in constant time.
        mac.verify_slice(&signature)
            .map_err(|_| TokenError::Signature)?;
        let claims: Claims = decode_part(payload)?;
        let exp = claims.exp.ok_or(TokenError::Claim("exp is required"))?;
        if now > exp.saturating_add(LEEWAY_SECONDS) {
            return Err(TokenError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| now < nbf.saturating_sub(LEEWAY_SECONDS))
        {
            return Err(TokenError::NotYetValid);
        }
        let sub = claims.sub.ok_or(TokenError::Claim("sub is required"))?;
        if sub.is_empty() || sub.len() > MAX_USER_ID_BYTES || sub.contains('\0') {
            return Err(TokenError::Claim(
                "sub must be a user id of 1 to 512 bytes without NUL",
            ));
        }
        Ok(sub)
    }
}

fn header_and_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(token.len())
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<i64>,
    nbf: Option<i64>,
}

fn decode_part<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed("a part is not base64url"))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| TokenError::Malformed("a part is not the JSON expected"))
}

/// Why a token was refused; the message is the 401's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token: send Authorization: Bearer <token>")]
    Missing,
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    #[error("the token's algorithm {0:?} is not accepted; sign with HS256")]
    Algorithm(String),
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token's claims are incomplete: {0}")]
    Claim(&'static str),
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", error.to_string())
    }
}

/// The signed-in user of a `/v1/me/…` request (header only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me(pub String);

/// The signed-in user of a live-stream request: the header, or
/// `?access_token=` (browsers cannot set headers on WebSocket or
/// EventSource).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeStream(pub String);

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn authenticate(state: &HttpState, token: Option<&str>) -> Result<String, ApiError> {
    let Some(secret) = &state.user_tokens else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "user_auth_disabled",
            "end-user routes are off: NUDGE_CP_USER_TOKEN_SECRET is not set",
        ));
    };
    let token = token.ok_or(TokenError::Missing)?;
    Ok(secret.verify(token, jiff::Timestamp::now().as_second())?)
}

impl FromRequestParts<HttpState> for Me {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, ApiError> {
        authenticate(state, bearer(parts)).map(Me)
    }
}

#[derive(Deserialize)]
struct AccessToken {
    access_token: Option<String>,
}

impl FromRequestParts<HttpState> for MeStream {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, ApiError> {
        if let Some(token) = bearer(parts) {
            return authenticate(state, Some(token)).map(MeStream);
        }
        let Query(query) = Query::<AccessToken>::try_from_uri(&parts.uri)
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        authenticate(state, query.access_token.as_deref()).map(MeStream)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn secret() -> UserTokenSecret {
        "an-application-secret-of-32-bytes!!".parse().unwrap()
    }

    #[test]
    fn a_signed_token_names_its_user() {
        let token = secret().sign(&json!({"sub": "u1", "exp": NOW + 600}));
        assert_eq!(secret().verify(&token, NOW), Ok("u1".to_owned()));
    }

    #[test]
    fn refusals_say_why() {
        let other: UserTokenSecret = "another-secret-that-is-32-bytes-long".parse().unwrap();
        let cases = [
            (
                other.sign(&json!({"sub": "u1", "exp": NOW + 600})),
                TokenError::Signature,
            ),
            (
                secret().sign(&json!({"sub": "u1", "exp": NOW - 61})),
                TokenError::Expired,
            ),
            (
                secret().sign(&json!({"sub": "u1", "exp": NOW + 600, "nbf": NOW + 120})),
                TokenError::NotYetValid,
            ),
            (
                secret().sign(&json!({"sub": "u1"})),
                TokenError::Claim("exp is required"),
            ),
            (
                secret().sign(&json!({"exp": NOW + 600})),
                TokenError::Claim("sub is required"),
            ),
            (
                "a.b".to_owned(),
                TokenError::Malformed("not three dot-separated parts"),
            ),
        ];
        for (token, expected) in cases {
            assert_eq!(secret().verify(&token, NOW), Err(expected));
        }
        // Within the leeway an expired token still passes.
        let late = secret().sign(&json!({"sub": "u1", "exp": NOW - 30}));
        assert!(secret().verify(&late, NOW).is_ok());
    }

    #[test]
    fn the_header_cannot_choose_the_algorithm() {
        let token = secret().sign(&json!({"sub": "u1", "exp": NOW + 600}));
        let (_, rest) = token.split_once('.').unwrap();
        for alg in ["none", "RS256", "HS512"] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
            let forged = format!("{header}.{rest}");
            assert_eq!(
                secret().verify(&forged, NOW),
                Err(TokenError::Algorithm(alg.to_owned()))
            );
        }
        // Changing the payload breaks the signature.
        let mut parts: Vec<&str> = token.split('.').collect();
        let payload = URL_SAFE_NO_PAD.encode(json!({"sub": "admin", "exp": NOW + 600}).to_string());
        parts[1] = &payload;
        assert_eq!(
            secret().verify(&parts.join("."), NOW),
            Err(TokenError::Signature)
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!("too-short".parse::<UserTokenSecret>().is_err());
        assert_eq!(format!("{:?}", secret()), "UserTokenSecret(<redacted>)");
    }
}
