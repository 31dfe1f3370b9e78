//! The one-click unsubscribe link of emails (RFC 8058): stop one
//! notification type on one channel for one user.
//!
//! The payload is a version byte (1), the issued-at time in Unix seconds
//! (8 bytes, big-endian), then the user id, the type and the channel name,
//! each as a 2-byte big-endian length and UTF-8 bytes. Binary rather than
//! JSON so links stay short. The issued-at time is carried (for diagnosis,
//! and for a maximum age should one ever be wanted) but not checked: RFC
//! 8058 expects the link to keep working.

use jiff::Timestamp;

use super::{LinkConfigError, LinkError, Signer};
use crate::channels::ChannelKind;

/// Longest user id plus type a link is made for: a `List-Unsubscribe`
/// header must fit on a mail header line (998 characters), with the
/// public URL in front.
const MAX_FIELDS_BYTES: usize = 512;

const VERSION: u8 = 1;
/// Keeps unsubscribe tags apart from every other kind of link signed with
/// the same secret (see the module doc of [`crate::links`]).
const PURPOSE: &[u8] = b"nudge/unsubscribe\0";

/// What an unsubscribe link says: stop `notification_type` on `channel`
/// for `user_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubscribeClaims {
    pub user_id: String,
    pub notification_type: String,
    pub channel: ChannelKind,
    /// When the link was made (whole seconds).
    pub issued_at: Timestamp,
}

/// Makes and checks unsubscribe links. Cheap to clone; the secret never
/// reaches `Debug` output.
#[derive(Clone)]
pub struct UnsubscribeLinks {
    /// `public_url` without a trailing `/`.
    base_url: String,
    signer: Signer,
}

impl std::fmt::Debug for UnsubscribeLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnsubscribeLinks")
            .field("base_url", &self.base_url)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl UnsubscribeLinks {
    /// Links under `public_url` (already checked to be an http(s) URL),
    /// signed with `secret`, which must be at least
    /// [`super::MIN_SECRET_BYTES`].
    pub fn new(public_url: &str, secret: &str) -> Result<Self, LinkConfigError> {
        Ok(UnsubscribeLinks {
            base_url: public_url.trim_end_matches('/').to_owned(),
            signer: Signer::new(secret)?,
        })
    }

    /// `{public_url}/v1/unsubscribe/{token}`, or `None` when the user id and
    /// type are too long for a mail header (see `MAX_FIELDS_BYTES`).
    pub fn url(&self, claims: &UnsubscribeClaims) -> Option<String> {
        let token = self.sign_unsubscribe(claims)?;
        Some(format!("{}/v1/unsubscribe/{token}", self.base_url))
    }

    /// The token for `claims`; `None` when they are too long to send.
    pub fn sign_unsubscribe(&self, claims: &UnsubscribeClaims) -> Option<String> {
        let user = claims.user_id.as_bytes();
        let kind = claims.notification_type.as_bytes();
        let channel = claims.channel.as_str().as_bytes();
        if user.len() + kind.len() > MAX_FIELDS_BYTES {
            return None;
        }
        let mut bytes = Vec::with_capacity(9 + 6 + user.len() + kind.len() + channel.len() + 16);
        bytes.push(VERSION);
        bytes.extend_from_slice(&claims.issued_at.as_second().to_be_bytes());
        for field in [user, kind, channel] {
            // At most MAX_FIELDS_BYTES, so the length fits.
            bytes.extend_from_slice(&(field.len() as u16).to_be_bytes());
            bytes.extend_from_slice(field);
        }
        Some(self.signer.sign(PURPOSE, bytes))
    }

    /// The claims of a token this server signed. The tag is checked before
    /// anything in the payload is read.
    pub fn verify_unsubscribe(&self, token: &str) -> Result<UnsubscribeClaims, LinkError> {
        let payload = self.signer.verify(PURPOSE, token, 1 + 8 + 6)?;
        // Signed by us, so well-formed unless the format changed.
        parse(&payload).ok_or(LinkError::Malformed)
    }
}

fn parse(payload: &[u8]) -> Option<UnsubscribeClaims> {
    let (&version, rest) = payload.split_first()?;
    if version != VERSION {
        return None;
    }
    let (seconds, mut rest) = rest.split_at_checked(8)?;
    let issued_at = Timestamp::from_second(i64::from_be_bytes(seconds.try_into().ok()?)).ok()?;
    let mut field = || {
        let (length, tail) = rest.split_at_checked(2)?;
        let length = usize::from(u16::from_be_bytes(length.try_into().ok()?));
        let (text, tail) = tail.split_at_checked(length)?;
        rest = tail;
        String::from_utf8(text.to_vec()).ok()
    };
    let user_id = field()?;
    let notification_type = field()?;
    let channel = ChannelKind::parse(&field()?)?;
    if !rest.is_empty() || user_id.is_empty() || notification_type.is_empty() {
        return None;
    }
    Some(UnsubscribeClaims {
        user_id,
        notification_type,
        channel,
        issued_at,
    })
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    /// [`claims`] signed with [`SECRET`] (computed independently from the
    /// format in the module doc).
    const STABLE_TOKEN: &str =
        "AQAAAABrSdIAAAR1LTQyAApuZXdzbGV0dGVyAAVlbWFpbOPqgRPBi1BRWwsHBlIZfZA";

    fn links() -> UnsubscribeLinks {
        UnsubscribeLinks::new("https://nudge.example.com/", SECRET).unwrap()
    }

    fn claims() -> UnsubscribeClaims {
        UnsubscribeClaims {
            user_id: "u-42".to_owned(),
            notification_type: "newsletter".to_owned(),
            channel: ChannelKind::Email,
            issued_at: Timestamp::from_second(1_800_000_000).unwrap(),
        }
    }

    #[test]
    fn a_signed_token_verifies_to_its_claims() {
        let links = links();
        let token = links.sign_unsubscribe(&claims()).unwrap();
        assert_eq!(links.verify_unsubscribe(&token).unwrap(), claims());
        let url = links.url(&claims()).unwrap();
        assert_eq!(
            url,
            format!("https://nudge.example.com/v1/unsubscribe/{token}")
        );
        // URL-safe as it is, short, and fit for angle brackets.
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{token}"
        );
        assert!(token.len() < 80, "{} characters: {token}", token.len());
    }

    #[test]
    fn unicode_ids_round_trip() {
        let links = links();
        let claims = UnsubscribeClaims {
            user_id: "usér/ü 1".to_owned(),
            ..claims()
        };
        let token = links.sign_unsubscribe(&claims).unwrap();
        assert_eq!(links.verify_unsubscribe(&token).unwrap(), claims);
    }

    #[test]
    fn every_altered_byte_fails() {
        let links = links();
        let token = links.sign_unsubscribe(&claims()).unwrap();
        let bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for index in 0..bytes.len() {
            let mut altered = bytes.clone();
            altered[index] ^= 0x01;
            let altered = URL_SAFE_NO_PAD.encode(altered);
            assert!(
                links.verify_unsubscribe(&altered).is_err(),
                "byte {index} altered and still verified"
            );
        }
    }

    #[test]
    fn forged_and_mangled_tokens_fail() {
        let links = links();
        let other = UnsubscribeLinks::new("https://nudge.example.com", &SECRET.repeat(2)).unwrap();
        let foreign = other.sign_unsubscribe(&claims()).unwrap();
        assert_eq!(
            links.verify_unsubscribe(&foreign),
            Err(LinkError::BadSignature)
        );
        // Someone else's claims under our tag.
        let token = links.sign_unsubscribe(&claims()).unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        let user_at = 1 + 8 + 2;
        bytes[user_at..user_at + 4].copy_from_slice(b"u-43");
        assert_eq!(
            links.verify_unsubscribe(&URL_SAFE_NO_PAD.encode(bytes)),
            Err(LinkError::BadSignature)
        );
        for mangled in [
            "",
            "abc",
            "not base64!",
            &token[..token.len() - 4],
            &format!("{token}=="),
        ] {
            assert!(links.verify_unsubscribe(mangled).is_err(), "{mangled:?}");
        }
    }

    #[test]
    fn short_secrets_and_long_ids_are_refused() {
        let error = UnsubscribeLinks::new("https://x.example", "short").unwrap_err();
        assert!(error.to_string().contains("at least 32 bytes"), "{error}");
        let long = UnsubscribeClaims {
            user_id: "u".repeat(600),
            ..claims()
        };
        assert_eq!(links().url(&long), None);
    }

    /// Tokens already in inboxes keep verifying: this one was made by the
    /// first release of these links.
    #[test]
    fn the_format_is_stable() {
        let token = links().sign_unsubscribe(&claims()).unwrap();
        assert_eq!(links().verify_unsubscribe(&token).unwrap(), claims());
        assert_eq!(token, STABLE_TOKEN);
    }

    #[test]
    fn the_secret_is_not_printed() {
        assert!(!format!("{:?}", links()).contains(SECRET));
    }
}
