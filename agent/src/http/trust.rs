//! Who may do what at intake: public write keys may sit in browser code,
//! secret server keys (`NUDGE_AGENT_SERVER_KEYS`) only in backends, and only
//! trusted calls may send notifications or say where they go.
//!
//! # The rule
//!
//! A call is *trusted* when it carries a server key (the HTTP Basic user
//! name, or its own or the batch's `writeKey`), or, only while no server key
//! is configured, when the request has no `Origin` header. Browsers send
//! `Origin` on every `POST` (Fetch standard, "append a request `Origin`
//! header": every request whose method is neither `GET` nor `HEAD`, and
//! every CORS request), so a page can never be trusted by leaving it out;
//! Segment's server libraries never send it.
//!
//! Untrusted calls may track, page, screen, group, alias, start and end
//! sessions, and identify with any trait except the contact traits
//! ([`nudge_proto::contact`]: where notifications go). They may not
//! `notify`, and may not set a contact trait, even `null`: a page script
//! holds the public write key, so it could otherwise `identify` another
//! user with its own address and receive their next email.
//!
//! # What it promises
//!
//! * Refusals are all or nothing, like every intake refusal: a batch with
//!   one refused item is refused whole, naming the item's index.
//! * A server key never leaves the agent: envelopes it labels carry
//!   `server-key:<first 12 hex digits of its SHA-256>` as their write key,
//!   which tells keys apart (e.g. during a rotation) without revealing them.
//! * Server keys are compared in constant time.

use std::fmt::Write;

use nudge_proto::v1::{Envelope, envelope::Body};
use sha2::{Digest, Sha256};

use crate::segment::At;

/// A request the trust rule (or the origin list) refuses; nothing of it is
/// stored. Answered `403`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Forbidden {
    /// A page on an origin `NUDGE_AGENT_CORS_ORIGINS` does not list.
    #[error("Origin {origin:?} is not allowed to call this agent (NUDGE_AGENT_CORS_ORIGINS)")]
    OriginNotAllowed { origin: String },
    /// A notify from an untrusted caller.
    #[error(
        "notify is accepted only from a trusted caller: send it from your backend{}",
        server_key_hint(*.server_keys)
    )]
    ServerKeyRequired { server_keys: bool },
    /// A preflight for a route that never answers browsers.
    #[error("this route does not answer browsers: call it from your backend")]
    NotForBrowsers,
    /// A contact trait from an untrusted caller.
    #[error(
        "{at}: trait `{name}` is where notifications go and is accepted only from a trusted \
         caller: set it from your backend{}",
        server_key_hint(*.server_keys)
    )]
    ContactTrait {
        at: At,
        name: &'static str,
        server_keys: bool,
    },
}

fn server_key_hint(server_keys: bool) -> &'static str {
    if server_keys {
        " with a server key (HTTP Basic user name or `writeKey`)"
    } else {
        " (a request without an Origin header)"
    }
}

/// Who sent a request, as far as trust goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller {
    /// The request has an `Origin` header: a browser.
    pub(crate) browser: bool,
    /// The HTTP Basic user name is a server key.
    pub(crate) basic_server_key: bool,
}

/// The configured server keys.
#[derive(Clone, Default)]
pub struct ServerKeys {
    keys: Vec<String>,
}

/// Secrets stay out of debug output (and so out of logs and panics).
impl std::fmt::Debug for ServerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerKeys({} redacted)", self.keys.len())
    }
}

impl ServerKeys {
    pub fn new(keys: Vec<String>) -> Self {
        Self {
            keys: keys.into_iter().filter(|key| !key.is_empty()).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `key` is one of them. Every key is compared in full, so the
    /// time taken does not tell how much of a guess was right.
    pub fn contains(&self, key: &str) -> bool {
        self.keys
            .iter()
            .fold(false, |found, known| found | constant_time_eq(known, key))
    }

    /// Whether a call with `write_key` (its envelope's) from `caller` is
    /// trusted (see the module doc).
    fn trusts(&self, caller: Caller, write_key: &str) -> bool {
        caller.basic_server_key || self.contains(write_key) || (self.is_empty() && !caller.browser)
    }

    /// Applies the rule to a request's envelopes (in call order, as built)
    /// whose identify calls carry `contact` traits (from
    /// `Request::contact_traits`), then replaces every server key in them
    /// by its label.
    pub(crate) fn check(
        &self,
        caller: Caller,
        contact: &[(At, &'static str)],
        envelopes: &mut [Envelope],
    ) -> Result<(), Forbidden> {
        let server_keys = !self.is_empty();
        for (index, envelope) in envelopes.iter().enumerate() {
            if self.trusts(caller, &envelope.write_key) {
                continue;
            }
            if matches!(envelope.body, Some(Body::Notify(_))) {
                return Err(Forbidden::ServerKeyRequired { server_keys });
            }
            if let Some((at, name)) = contact.iter().find(|(at, _)| position(*at) == index) {
                return Err(Forbidden::ContactTrait {
                    at: *at,
                    name,
                    server_keys,
                });
            }
        }
        if server_keys {
            for envelope in envelopes {
                if self.contains(&envelope.write_key) {
                    envelope.write_key = label(&envelope.write_key);
                }
            }
        }
        Ok(())
    }
}

/// The envelope index of a call: its batch index, or 0 for a single call.
fn position(at: At) -> usize {
    match at {
        At::Item { index, .. } => index,
        At::Call(_) | At::Batch => 0,
    }
}

/// What envelopes carry instead of a server key.
fn label(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest[..6]
        .iter()
        .fold(String::from("server-key:"), |mut label, byte| {
            let _ = write!(label, "{byte:02x}");
            label
        })
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |differ, (x, y)| differ | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use nudge_proto::v1::{Identify, Notify, Track};

    use super::*;
    use crate::segment::CallKind;

    const SERVER: &str = "s3cret-server-key-0123456789";

    fn envelope(write_key: &str, body: Body) -> Envelope {
        Envelope {
            id: "id".into(),
            user_id: "u".into(),
            write_key: write_key.into(),
            body: Some(body),
            ..Envelope::default()
        }
    }

    fn notify(write_key: &str) -> Envelope {
        envelope(write_key, Body::Notify(Notify::default()))
    }

    fn identify(write_key: &str) -> Envelope {
        envelope(write_key, Body::Identify(Identify::default()))
    }

    const BROWSER: Caller = Caller {
        browser: true,
        basic_server_key: false,
    };
    const BACKEND: Caller = Caller {
        browser: false,
        basic_server_key: false,
    };
    const IDENTIFY: At = At::Call(CallKind::Identify);

    #[test]
    fn without_server_keys_a_missing_origin_is_trusted() {
        let keys = ServerKeys::new(vec![]);
        assert!(keys.check(BACKEND, &[], &mut [notify("pk")]).is_ok());
        assert!(
            keys.check(BACKEND, &[(IDENTIFY, "email")], &mut [identify("pk")])
                .is_ok()
        );
        assert_eq!(
            keys.check(BROWSER, &[], &mut [notify("pk")]),
            Err(Forbidden::ServerKeyRequired { server_keys: false })
        );
        let refused = keys
            .check(BROWSER, &[(IDENTIFY, "phone")], &mut [identify("pk")])
            .unwrap_err();
        assert!(refused.to_string().contains("trait `phone`"), "{refused}");
        let mut untouched = [
            envelope("pk", Body::Track(Track::default())),
            identify("pk"),
        ];
        assert!(keys.check(BROWSER, &[], &mut untouched).is_ok());
    }

    #[test]
    fn with_server_keys_only_a_server_key_is_trusted() {
        let keys = ServerKeys::new(vec![SERVER.into()]);
        assert_eq!(
            keys.check(BACKEND, &[], &mut [notify("pk")]),
            Err(Forbidden::ServerKeyRequired { server_keys: true }),
            "no Origin is not enough once server keys exist"
        );
        let mut with_key = [notify(SERVER)];
        keys.check(BROWSER, &[], &mut with_key).unwrap();
        assert_eq!(with_key[0].write_key, label(SERVER));
        assert!(with_key[0].write_key.starts_with("server-key:"));
        assert!(!with_key[0].write_key.contains(SERVER));

        let basic = Caller {
            browser: false,
            basic_server_key: true,
        };
        assert!(keys.check(basic, &[], &mut [notify("pk")]).is_ok());
    }

    #[test]
    fn a_refused_batch_item_is_named_by_its_index() {
        let keys = ServerKeys::new(vec![SERVER.into()]);
        let item = At::Item {
            index: 1,
            kind: Some(CallKind::Identify),
        };
        let mut batch = [identify(SERVER), identify("pk")];
        let error = keys
            .check(BROWSER, &[(item, "email")], &mut batch)
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("batch item 1 (identify): trait `email`"),
            "{error}"
        );
        let first = At::Item {
            index: 0,
            kind: Some(CallKind::Identify),
        };
        let mut trusted_item = [identify(SERVER), identify("pk")];
        assert!(
            keys.check(BROWSER, &[(first, "email")], &mut trusted_item)
                .is_ok(),
            "the item with the server key may carry an address"
        );
    }

    #[test]
    fn keys_compare_in_full() {
        let keys = ServerKeys::new(vec![SERVER.into(), String::new()]);
        assert!(keys.contains(SERVER));
        assert!(!keys.contains(""));
        assert!(!keys.contains(&SERVER[..10]));
        assert!(!keys.contains(&format!("{SERVER}x")));
        assert_ne!(label(SERVER), label("another-server-key-0123456789"));
        assert!(!format!("{keys:?}").contains(SERVER));
    }
}
