//! Signed links in messages: the one-click unsubscribe link of emails
//! (RFC 8058, advertised with RFC 2369's `List-Unsubscribe`), and the open
//! pixel and click-tracking links of engagement tracking, with the HTML
//! rewriting that puts them into an email.
//!
//! | module | what it does |
//! |---|---|
//! | [`unsubscribe`] | [`UnsubscribeLinks`]: `/v1/unsubscribe/{token}` for a user, type and channel |
//! | [`tracking`] | [`TrackingLinks`]: `/v1/t/open/{token}.gif` for a delivery, `/v1/t/click/{token}` for a delivery and a destination |
//! | `html` | the small `<a href>` rewriter and pixel insertion behind [`TrackingLinks::instrument_html`] |
//!
//! # What every link promises
//!
//! * **Only this server's links verify.** A token is
//!   `base64url(payload · tag)`, unpadded, where `tag` is HMAC-SHA256 over a
//!   purpose label and the payload, keyed by the operator's `link_secret`,
//!   cut to its first 16 bytes (128 bits; RFC 2104 §5 allows truncation to
//!   half the hash length). Changing any byte of a token makes it fail;
//!   the tag is compared in constant time and checked before anything in
//!   the payload is read.
//! * **One kind of link is never another.** Every kind has its own purpose
//!   label (`nudge/unsubscribe\0`, `nudge/open\0`, `nudge/click\0`, each
//!   ending in NUL so none is a prefix of another) inside the MAC, so a
//!   tag made for one kind does not verify as any other, whatever the
//!   payloads look like: an unsubscribe token is no click token.
//! * **Links do not expire.** Mail sits in inboxes for years and its links
//!   must keep working. The way to invalidate every link ever sent is a new
//!   `link_secret`.
//! * **Signed, not encrypted.** Anyone who sees a link can read what it
//!   carries (base64, not secret); only the server can make one.

mod html;
pub mod tracking;
pub mod unsubscribe;

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub use tracking::{ClickClaims, TrackingLinks};
pub use unsubscribe::{UnsubscribeClaims, UnsubscribeLinks};

/// Shortest accepted `link_secret`, in bytes: HMAC-SHA256's own strength.
pub const MIN_SECRET_BYTES: usize = 32;

/// Bytes of the HMAC-SHA256 tag kept in a token.
const TAG_BYTES: usize = 16;

/// Why a token was refused. Both mean "not a link this server made", and
/// change nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the link is malformed (cut short or mangled)")]
    Malformed,
    #[error("the link's signature does not verify: it was altered or not issued by this server")]
    BadSignature,
}

/// Why the link settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LinkConfigError(String);

/// The secret and the token framing every kind of link shares. The secret
/// never reaches `Debug` output.
#[derive(Clone)]
struct Signer {
    key: Arc<[u8]>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Signer {
    /// `secret` must be at least [`MIN_SECRET_BYTES`].
    fn new(secret: &str) -> Result<Self, LinkConfigError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(LinkConfigError(format!(
                "must be at least {MIN_SECRET_BYTES} bytes (it has {}); \
                 make one with `openssl rand -base64 32`",
                secret.len()
            )));
        }
        Ok(Signer {
            key: Arc::from(secret.as_bytes()),
        })
    }

    /// `base64url(payload · tag)` for a link of kind `purpose`.
    fn sign(&self, purpose: &[u8], mut payload: Vec<u8>) -> String {
        let tag = self.mac(purpose, &payload).finalize().into_bytes();
        payload.extend_from_slice(&tag[..TAG_BYTES]);
        URL_SAFE_NO_PAD.encode(payload)
    }

    /// The payload of a token of kind `purpose` this server signed, at
    /// least `min_payload` bytes long.
    fn verify(
        &self,
        purpose: &[u8],
        token: &str,
        min_payload: usize,
    ) -> Result<Vec<u8>, LinkError> {
        let mut bytes = URL_SAFE_NO_PAD
            .decode(token.trim())
            .map_err(|_| LinkError::Malformed)?;
        if bytes.len() < min_payload + TAG_BYTES {
            return Err(LinkError::Malformed);
        }
        let tag = bytes.split_off(bytes.len() - TAG_BYTES);
        self.mac(purpose, &bytes)
            .verify_truncated_left(&tag)
            .map_err(|_| LinkError::BadSignature)?;
        Ok(bytes)
    }

    fn mac(&self, purpose: &[u8], payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("hmac takes any key length");
        mac.update(purpose);
        mac.update(payload);
        mac
    }
}
