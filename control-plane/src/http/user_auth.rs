//! End-user authentication for the `/v1/me/…` routes.
//!
//! The application's backend signs a JSON Web Token for its signed-in user
//! with a secret it shares with the control plane
//! (`NUDGE_CP_USER_TOKEN_SECRET`): HS256, `sub` = the user id, `exp`
//! required (`nbf` honoured when present), with [`LEEWAY_SECONDS`] for clock skew.
//! The browser sends it as `Authorization: Bearer <token>`.
//!
//! Optionally (`NUDGE_CP_USER_TOKEN_AUDIENCE`, `…_ISSUER`) `aud` must name
//! the configured audience and `iss` equal the configured issuer; and a
//! token may live at most `NUDGE_CP_USER_TOKEN_MAX_LIFETIME` (default 24 h):
//! `exp - iat`, or `exp - now` for a token without `iat` ([`TokenPolicy`]).
//!
//! # The live stream
//!
//! Browsers open WebSocket and EventSource without headers, so the stream
//! also takes credentials from the query ([`MeStream`]). The page first
//! asks `POST /v1/me/stream-ticket` (bearer header) for a *stream ticket*:
//! an HS256 token with `typ` = `nudge-stream-ticket`, the user's `sub`,
//! good for [`TICKET_LIFETIME_SECONDS`], signed with a key derived from the
//! secret — so a ticket never verifies as a user token (a ticket on any
//! other route is a 401) and a user token never verifies as a ticket. It
//! then opens the stream with `?ticket=`. A ticket may be reused within its
//! minute (replicas share no state); a leaked one opens only this user's
//! stream, only for that minute. `?access_token=` (the user's token itself)
//! still works for older clients but is discouraged: access logs keep it.
//!
//! Only HS256 is accepted: the algorithm in the token's header is checked
//! against it, never trusted (no `none`, no RS/HS confusion). Every refusal
//! is a `401 invalid_token` whose message says what was wrong; when no
//! secret is configured the routes answer `503 user_auth_disabled`.

use std::fmt;

use axum::extract::{FromRequestParts, Query};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::openapi::responses;
use super::{ApiError, HttpState};

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECONDS: i64 = 60;
/// Shortest secret accepted: HS256 wants at least the hash's 32 bytes.
pub const MIN_SECRET_BYTES: usize = 32;
/// Longest token read; a token is a few hundred bytes.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest user id accepted in `sub`.
const MAX_USER_ID_BYTES: usize = 512;

/// The shared HS256 secret and what a token must carry besides a valid
/// signature ([`TokenPolicy`]). Never printed.
#[derive(Clone)]
pub struct UserTokenSecret {
    /// Verifies users' tokens (the application's backend signs them).
    key: Vec<u8>,
    /// Signs and verifies stream tickets: derived from `key` so a ticket
    /// never verifies as a user token, nor a user token as a ticket.
    ticket_key: Vec<u8>,
    /// Audience, issuer and lifetime rules.
    policy: TokenPolicy,
}

/// What a user token must carry besides a valid signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    /// `aud` must name it (a string, or an array containing it), when set.
    pub audience: Option<String>,
    /// `iss` must equal it, when set.
    pub issuer: Option<String>,
    /// Longest `exp - iat` accepted, in seconds (`exp - now` when there is
    /// no `iat`), so a leaked token is not good for months.
    pub max_lifetime: i64,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        TokenPolicy {
            audience: None,
            issuer: None,
            max_lifetime: DEFAULT_MAX_LIFETIME_SECONDS,
        }
    }
}

/// Default of `NUDGE_CP_USER_TOKEN_MAX_LIFETIME`.
pub const DEFAULT_MAX_LIFETIME_SECONDS: i64 = 24 * 3600;
/// How long a stream ticket opens the stream.
pub const TICKET_LIFETIME_SECONDS: i64 = 60;
/// Clock skew tolerated on a ticket's `exp` (replicas share NTP time).
const TICKET_LEEWAY_SECONDS: i64 = 5;
/// The `typ` claim of a stream ticket.
const TICKET_TYPE: &str = "nudge-stream-ticket";

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
        let key = text.as_bytes().to_vec();
        let mut derive = Hmac::<Sha256>::new_from_slice(&key).expect("hmac takes any key length");
        derive.update(b"nudge stream ticket v1");
        let ticket_key = derive.finalize().into_bytes().to_vec();
        Ok(UserTokenSecret {
            key,
            ticket_key,
            policy: TokenPolicy::default(),
        })
    }
}

impl UserTokenSecret {
    /// The same secret, checking tokens against `policy`.
    pub fn with_policy(mut self, policy: TokenPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Signs `claims` (a JSON object) as an HS256 token: what an
    /// application's backend does; here for tests and tools.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        sign_with(&self.key, claims)
    }

    /// A stream ticket for `user`, good for [`TICKET_LIFETIME_SECONDS`]
    /// from `now`: what `POST /v1/me/stream-ticket` answers.
    pub fn stream_ticket(&self, user: &str, now: i64) -> String {
        sign_with(
            &self.ticket_key,
            &serde_json::json!({
                "typ": TICKET_TYPE,
                "sub": user,
                "iat": now,
                "exp": now + TICKET_LIFETIME_SECONDS,
            }),
        )
    }

    /// The user id of a valid user token at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<String, TokenError> {
        let claims = match verified_claims(&self.key, token) {
            Err(TokenError::Signature) if verified_claims(&self.ticket_key, token).is_ok() => {
                return Err(TokenError::TicketAsToken);
            }
            other => other?,
        };
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
        // Measured from `iat`, or from now without one; an `iat` in the
        // future does not buy a longer life.
        let start = claims.iat.unwrap_or(now).min(now);
        if exp.saturating_sub(start) > self.policy.max_lifetime {
            return Err(TokenError::Lifetime(self.policy.max_lifetime));
        }
        if let Some(audience) = &self.policy.audience
            && !claims.aud.as_ref().is_some_and(|aud| aud.names(audience))
        {
            return Err(TokenError::Audience(audience.clone()));
        }
        if let Some(issuer) = &self.policy.issuer
            && claims.iss.as_deref() != Some(issuer.as_str())
        {
            return Err(TokenError::Issuer(issuer.clone()));
        }
        user_id(claims.sub)
    }

    /// The user id of a valid stream ticket at `now`.
    pub fn verify_ticket(&self, ticket: &str, now: i64) -> Result<String, TokenError> {
        let claims = verified_claims(&self.ticket_key, ticket).map_err(|error| match error {
            TokenError::Signature => TokenError::Ticket("its signature does not verify"),
            other => other,
        })?;
        if claims.typ.as_deref() != Some(TICKET_TYPE) {
            return Err(TokenError::Ticket("it is not a stream ticket"));
        }
        let exp = claims.exp.ok_or(TokenError::Ticket("exp is required"))?;
        if now > exp.saturating_add(TICKET_LEEWAY_SECONDS) {
            return Err(TokenError::Ticket(
                "it has expired: ask POST /v1/me/stream-ticket for a new one",
            ));
        }
        user_id(claims.sub)
    }
}

fn sign_with(key: &[u8], claims: &serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac takes any key length");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// The claims of `token` once its shape, algorithm and signature (by
/// `key`) check out; nothing about the claims is checked yet.
fn verified_claims(key: &[u8], token: &str) -> Result<Claims, TokenError> {
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
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac takes any key length");
    mac.update(&token.as_bytes()[..header_and_payload_len(token)]);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&signature)
        .map_err(|_| TokenError::Signature)?;
    decode_part(payload)
}

fn user_id(sub: Option<String>) -> Result<String, TokenError> {
    let sub = sub.ok_or(TokenError::Claim("sub is required"))?;
    if sub.is_empty() || sub.len() > MAX_USER_ID_BYTES || sub.contains('\0') {
        return Err(TokenError::Claim(
            "sub must be a user id of 1 to 512 bytes without NUL",
        ));
    }
    Ok(sub)
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
    iat: Option<i64>,
    aud: Option<Audience>,
    iss: Option<String>,
    /// Only stream tickets carry it.
    typ: Option<String>,
}

/// `aud`: one string or an array of them (RFC 7519 §4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn names(&self, audience: &str) -> bool {
        match self {
            Audience::One(one) => one == audience,
            Audience::Many(many) => many.iter().any(|one| one == audience),
        }
    }
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
    #[error(
        "the token lives longer than the {0} s allowed (exp - iat, or exp - now without iat; \
         NUDGE_CP_USER_TOKEN_MAX_LIFETIME)"
    )]
    Lifetime(i64),
    #[error("the token's aud does not name {0:?}")]
    Audience(String),
    #[error("the token's iss is not {0:?}")]
    Issuer(String),
    #[error("a stream ticket is not a user token: send the user's token")]
    TicketAsToken,
    #[error("the stream ticket is refused: {0}")]
    Ticket(&'static str),
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", error.to_string())
    }
}

/// The signed-in user of a `/v1/me/…` request (header only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me(pub String);

/// The signed-in user of a live-stream request: the header, else
/// `?ticket=` (a stream ticket), else `?access_token=` (discouraged: the
/// user's long-lived token ends up in access logs). Browsers cannot set
/// headers on WebSocket or EventSource, hence the query.
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

fn secret(state: &HttpState) -> Result<&UserTokenSecret, ApiError> {
    state.user_tokens.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "user_auth_disabled",
            "end-user routes are off: NUDGE_CP_USER_TOKEN_SECRET is not set",
        )
    })
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn authenticate(state: &HttpState, token: Option<&str>) -> Result<String, ApiError> {
    let secret = secret(state)?;
    let token = token.ok_or(TokenError::Missing)?;
    Ok(secret.verify(token, now())?)
}

impl FromRequestParts<HttpState> for Me {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, ApiError> {
        authenticate(state, bearer(parts)).map(Me)
    }
}

#[derive(Deserialize)]
struct StreamCredentials {
    ticket: Option<String>,
    access_token: Option<String>,
}

impl FromRequestParts<HttpState> for MeStream {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, ApiError> {
        if let Some(token) = bearer(parts) {
            return authenticate(state, Some(token)).map(MeStream);
        }
        let Query(query) = Query::<StreamCredentials>::try_from_uri(&parts.uri)
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        if let Some(ticket) = &query.ticket {
            let user = secret(state)?.verify_ticket(ticket, now())?;
            return Ok(MeStream(user));
        }
        authenticate(state, query.access_token.as_deref()).map(MeStream)
    }
}

/// `POST /v1/me/stream-ticket`: a short-lived ticket that opens the
/// user's live stream as `?ticket=`, so the user's token stays out of
/// URLs (and so out of access logs and browser history).
#[utoipa::path(
    post,
    path = "/v1/me/stream-ticket",
    operation_id = "createMyStreamTicket",
    summary = "A short-lived ticket that opens the live stream",
    description = "Answers a ticket for the signed-in user, good for 60 s, to open `/v1/me/stream` or `/v1/me/events` as `?ticket=` so the user's long-lived token never appears in a URL (access logs, browser history). Ask for a new one before every (re)connect. The ticket is signed with a key derived from `NUDGE_CP_USER_TOKEN_SECRET` and is accepted nowhere else. Answered with `Cache-Control: no-store`.",
    tags = ["me", "stream"],
    security(("userToken" = [])),
    responses(
        (status = 200, body = StreamTicket, description = "The ticket."),
        responses::UserErrors,
    ),
)]
pub(crate) async fn stream_ticket(
    axum::extract::State(state): axum::extract::State<HttpState>,
    Me(user): Me,
) -> Result<Response, ApiError> {
    let ticket = secret(&state)?.stream_ticket(&user, now());
    let body = StreamTicket {
        ticket,
        expires_in: TICKET_LIFETIME_SECONDS,
    };
    Ok((
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        axum::Json(body),
    )
        .into_response())
}

/// The answer of `POST /v1/me/stream-ticket`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct StreamTicket {
    /// Pass as `?ticket=` to the live stream routes.
    ticket: String,
    /// Seconds the ticket stays valid (60).
    expires_in: i64,
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
    fn audience_and_issuer_are_checked_when_configured() {
        let strict = secret().with_policy(TokenPolicy {
            audience: Some("nudge".to_owned()),
            issuer: Some("https://app.example".to_owned()),
            ..TokenPolicy::default()
        });
        let iss = "https://app.example";
        let ok = [
            json!({"sub": "u1", "exp": NOW + 600, "aud": "nudge", "iss": iss}),
            json!({"sub": "u1", "exp": NOW + 600, "aud": ["other", "nudge"], "iss": iss}),
        ];
        for claims in ok {
            assert_eq!(
                strict.verify(&secret().sign(&claims), NOW),
                Ok("u1".to_owned())
            );
        }
        let audience = TokenError::Audience("nudge".to_owned());
        let issuer = TokenError::Issuer(iss.to_owned());
        let refused = [
            (
                json!({"sub": "u1", "exp": NOW + 600, "iss": iss}),
                &audience,
            ),
            (
                json!({"sub": "u1", "exp": NOW + 600, "aud": "other", "iss": iss}),
                &audience,
            ),
            (
                json!({"sub": "u1", "exp": NOW + 600, "aud": ["a", "b"], "iss": iss}),
                &audience,
            ),
            (
                json!({"sub": "u1", "exp": NOW + 600, "aud": "nudge"}),
                &issuer,
            ),
            (
                json!({"sub": "u1", "exp": NOW + 600, "aud": "nudge", "iss": "evil"}),
                &issuer,
            ),
        ];
        for (claims, expected) in refused {
            assert_eq!(
                strict.verify(&secret().sign(&claims), NOW),
                Err(expected.clone()),
                "{claims}"
            );
        }
        // Without settings, aud and iss are not looked at.
        let any = secret().sign(&json!({"sub": "u1", "exp": NOW + 600, "aud": 7, "iss": "x"}));
        assert!(
            secret().verify(&any, NOW).is_err(),
            "aud must still be JSON of its kind"
        );
        let any = secret().sign(&json!({"sub": "u1", "exp": NOW + 600, "aud": "x", "iss": "x"}));
        assert_eq!(secret().verify(&any, NOW), Ok("u1".to_owned()));
    }

    #[test]
    fn a_token_may_live_at_most_the_maximum() {
        let day = DEFAULT_MAX_LIFETIME_SECONDS;
        let ok = [
            json!({"sub": "u1", "iat": NOW - 100, "exp": NOW - 100 + day}),
            // Without iat, what is left of its life counts.
            json!({"sub": "u1", "exp": NOW + day}),
        ];
        for claims in ok {
            assert_eq!(
                secret().verify(&secret().sign(&claims), NOW),
                Ok("u1".to_owned())
            );
        }
        let refused = [
            json!({"sub": "u1", "iat": NOW, "exp": NOW + day + 1}),
            json!({"sub": "u1", "exp": NOW + 30 * day}),
            // A future iat buys nothing.
            json!({"sub": "u1", "iat": NOW + 30 * day, "exp": NOW + 30 * day + 60}),
        ];
        for claims in refused {
            assert_eq!(
                secret().verify(&secret().sign(&claims), NOW),
                Err(TokenError::Lifetime(day)),
                "{claims}"
            );
        }
        let hour = secret().with_policy(TokenPolicy {
            max_lifetime: 3600,
            ..TokenPolicy::default()
        });
        let long = secret().sign(&json!({"sub": "u1", "iat": NOW, "exp": NOW + 7200}));
        assert_eq!(hour.verify(&long, NOW), Err(TokenError::Lifetime(3600)));
    }

    #[test]
    fn a_stream_ticket_opens_only_the_stream() {
        let ticket = secret().stream_ticket("u1", NOW);
        assert_eq!(
            secret().verify_ticket(&ticket, NOW + 30),
            Ok("u1".to_owned())
        );
        assert!(matches!(
            secret().verify_ticket(&ticket, NOW + TICKET_LIFETIME_SECONDS + 6),
            Err(TokenError::Ticket(_))
        ));
        // Not a user token, and a user token is not a ticket.
        assert_eq!(
            secret().verify(&ticket, NOW),
            Err(TokenError::TicketAsToken)
        );
        let token = secret().sign(&json!({"sub": "u1", "exp": NOW + 600}));
        assert!(matches!(
            secret().verify_ticket(&token, NOW),
            Err(TokenError::Ticket(_))
        ));
        // Another secret's ticket, or a forged payload, does not verify.
        let other: UserTokenSecret = "another-secret-that-is-32-bytes-long".parse().unwrap();
        assert!(
            secret()
                .verify_ticket(&other.stream_ticket("u1", NOW), NOW)
                .is_err()
        );
        let mut parts: Vec<&str> = ticket.split('.').collect();
        let payload = URL_SAFE_NO_PAD
            .encode(json!({"typ": TICKET_TYPE, "sub": "admin", "exp": NOW + 60}).to_string());
        parts[1] = &payload;
        assert!(secret().verify_ticket(&parts.join("."), NOW).is_err());
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!("too-short".parse::<UserTokenSecret>().is_err());
        assert_eq!(format!("{:?}", secret()), "UserTokenSecret(<redacted>)");
    }
}
