//! The grammar a Web Push subscription's endpoint must follow to be
//! registered.
//!
//! Endpoints come from browsers, and every push service hands out the same
//! shape: `https://` + a DNS name + a path, sometimes a query (FCM's
//! `https://fcm.googleapis.com/fcm/send/…:APA91…`, Mozilla's
//! `https://updates.push.services.mozilla.com/wpush/v2/…`, Apple's
//! `https://web.push.apple.com/…`). Registration takes exactly that shape,
//! stated once as a regular expression in the OpenAPI document
//! (`Subscription.endpoint`'s `pattern`, [`PATTERN`] here) and checked by
//! hand by [`check`], so that:
//!
//! * every endpoint registration accepts is one the URL parser the send
//!   uses accepts too (a stored subscription never fails at send time for
//!   its syntax), and
//! * what the server accepts is exactly what the document allows, both
//!   ways (an API fuzzer holds the server to it).
//!
//! The grammar, narrower than URLs in general on purpose:
//! * scheme `https` or `http` (plain `http` and private hosts are refused
//!   at send time unless the operator allows them: see
//!   `channels::web_push`);
//! * host a DNS name — labels of ASCII letters, digits and inner single
//!   hyphens, the last label starting with a letter (a name whose last
//!   label is numeric is an IPv4 address to the URL parser) — or a dotted
//!   IPv4 address without leading zeros; no IPv6 literal, no user info, no
//!   internationalised (`xn--`) labels;
//! * an optional port, 1–65535 without leading zeros;
//! * an optional path and query of URL characters (RFC 3986's unreserved
//!   and sub-delimiters, `:`, `@`, `/`, `%`; `?` in the query); no
//!   fragment.

/// `Subscription.endpoint`'s schema in the OpenAPI document: [`PATTERN`]
/// and [`super::MAX_ADDRESS_LEN`], stated once here.
pub(crate) fn schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};

    use super::MAX_ADDRESS_LEN;
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(MAX_ADDRESS_LEN))
        .pattern(Some(PATTERN))
        .description(Some(format!(
            "The push service URL, at most {MAX_ADDRESS_LEN} characters, as push services give \
             them: `https://` (or `http://`), a DNS name (ASCII letters, digits and inner hyphens, \
             the last label starting with a letter) or an IPv4 address, an optional port \
             (1-65535), then an optional path and query of URL characters; no user info, IPv6 \
             literal, internationalised label or fragment. Anything else is refused with 400 at \
             registration. A plain `http` or private endpoint is accepted here and refused at \
             send time unless `web_push.allow_private_endpoints` is set."
        )))
        .build()
}

/// [`check`]'s grammar as a regular expression (ECMA-262, as JSON Schema
/// reads it). The OpenAPI document's `Subscription.endpoint` pattern is
/// this string; a test keeps them equal.
pub const PATTERN: &str = concat!(
    r"^https?://",
    r"(?:(?:[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*\.)*[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)*",
    r"|(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9]))",
    r"(?::(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?",
    r"(?:/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?",
    r"(?:\?[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?$",
);

/// Checks `endpoint` against the grammar above; the error says which part
/// is wrong. The length limit is the caller's (`MAX_ADDRESS_LEN`).
pub fn check(endpoint: &str) -> Result<(), &'static str> {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .ok_or("a web_push subscription endpoint must start with https:// (or http://)")?;
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if !is_dns_name(host) && !is_ipv4(host) {
        return Err(
            "a web_push subscription endpoint's host must be a DNS name (ASCII letters, digits \
             and inner hyphens, the last label starting with a letter) or an IPv4 address",
        );
    }
    if let Some(port) = port
        && !is_port(port)
    {
        return Err("a web_push subscription endpoint's port must be a number from 1 to 65535");
    }
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    let path_ok = path.chars().all(|c| is_url_char(c) || c == '/');
    let query_ok = query.is_none_or(|query| {
        query
            .chars()
            .all(|c| is_url_char(c) || c == '/' || c == '?')
    });
    if !path_ok || !query_ok {
        return Err(
            "a web_push subscription endpoint's path and query may hold only URL characters \
             (letters, digits and -._~!$&'()*+,;=:@%/?), and no fragment",
        );
    }
    Ok(())
}

/// Labels of letters, digits and single inner hyphens, the last starting
/// with a letter.
fn is_dns_name(host: &str) -> bool {
    let is_label = |label: &str| {
        !label.is_empty()
            && label
                .split('-')
                .all(|run| !run.is_empty() && run.bytes().all(|b| b.is_ascii_alphanumeric()))
    };
    let mut labels = host.split('.');
    let last = labels.next_back().unwrap_or_default();
    labels.all(is_label) && is_label(last) && last.starts_with(|c: char| c.is_ascii_alphabetic())
}

/// Four decimal octets, 0–255, without leading zeros.
fn is_ipv4(host: &str) -> bool {
    let octets: Vec<&str> = host.split('.').collect();
    octets.len() == 4
        && octets.iter().all(|octet| {
            is_decimal_without_leading_zero(octet, 3)
                && octet.parse::<u16>().is_ok_and(|n| n <= 255)
        })
}

/// 1–65535, without leading zeros.
fn is_port(port: &str) -> bool {
    is_decimal_without_leading_zero(port, 5)
        && port.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n))
}

fn is_decimal_without_leading_zero(digits: &str, max_len: usize) -> bool {
    (1..=max_len).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits.len() == 1 || !digits.starts_with('0'))
}

/// RFC 3986's unreserved characters and sub-delimiters, `:`, `@` and `%`.
fn is_url_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@%".contains(c)
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use proptest::prelude::*;

    use super::*;

    /// The document's own schema for the endpoint, compiled once.
    fn by_document() -> &'static jsonschema::Validator {
        static VALIDATOR: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
            let document: serde_json::Value =
                serde_json::from_str(include_str!("../../openapi.json")).unwrap();
            let schema =
                &document["components"]["schemas"]["Subscription"]["properties"]["endpoint"];
            assert_eq!(
                schema["pattern"], PATTERN,
                "openapi.json's Subscription.endpoint pattern is not endpoint::PATTERN"
            );
            jsonschema::draft202012::new(schema).unwrap()
        });
        &VALIDATOR
    }

    /// Characters worth trying next to an endpoint's own: its delimiters,
    /// digits, and some the grammar refuses.
    fn nearby_char() -> impl Strategy<Value = char> {
        prop_oneof![
            prop::sample::select(":/?#@.-%[]0159aZ_ \t\u{0}é".chars().collect::<Vec<_>>()),
            prop::char::range(' ', '~'),
        ]
    }

    /// The endpoints real push services hand out, and local ones the tests
    /// and a development setup use, are accepted.
    #[test]
    fn real_endpoints_are_accepted() {
        for endpoint in [
            "https://fcm.googleapis.com/fcm/send/dS2TSqwzL6c:APA91bHvA2ZPz-3kdD8_OZ7pwhZzPCd9Hxx",
            "https://updates.push.services.mozilla.com/wpush/v2/gAAAAABm_AbC-dEf_gHi=",
            "https://web.push.apple.com/QGq0Ks6Cj1JyYe1nXvM1b2cNlEtrCpUIA",
            "https://wns2-par02p.notify.windows.com/w/?token=BQYAAAD%2b",
            "http://127.0.0.1:41234/push/7",
            "http://localhost:8080/push",
            "https://push.example",
            format!("https://{}.example/x", "a".repeat(100)).as_str(),
            format!("https://{}push/x", "abc.".repeat(80)).as_str(),
        ] {
            assert_eq!(check(endpoint), Ok(()), "{endpoint}");
            assert!(by_document().is_valid(&endpoint.into()), "{endpoint}");
        }
    }

    #[test]
    fn each_refusal_names_the_part() {
        for (endpoint, part) in [
            ("ftp://push.example/x", "must start with"),
            ("https://", "host"),
            ("https://user@push.example/x", "host"),
            ("https://[::1]/x", "host"),
            ("https://1.2.3.999/x", "host"),
            ("https://push.123/x", "host"),
            ("https://xn--bcher-kva.example/x", "host"),
            ("https://-push.example/x", "host"),
            ("https://push.example:0/x", "port"),
            ("https://push.example:65536/x", "port"),
            ("https://push.example:/x", "port"),
            ("https://push.example/x#frag", "path and query"),
            ("https://push.example/a b", "path and query"),
            ("https://push.example/é", "path and query"),
        ] {
            let err = check(endpoint).unwrap_err();
            assert!(err.contains(part), "{endpoint}: {err}");
            assert!(!by_document().is_valid(&endpoint.into()), "{endpoint}");
        }
    }

    proptest! {
        #![proptest_config(crate::proptest_cases::bounded(2000))]

        /// Whatever the grammar allows, the send's URL parser takes, with
        /// the host and port the endpoint names.
        #[test]
        fn what_the_grammar_allows_parses(endpoint in PATTERN.trim_start_matches('^').trim_end_matches('$')) {
            prop_assert_eq!(check(&endpoint), Ok(()));
            let url = reqwest::Url::parse(&endpoint);
            prop_assert!(url.is_ok(), "{endpoint}: {url:?}");
            let url = url.unwrap();
            prop_assert!(url.host_str().is_some_and(|host| !host.is_empty()));
        }

        /// The check and the document's pattern agree on strings near the
        /// grammar: valid endpoints with characters swapped, added or cut.
        #[test]
        fn the_check_agrees_with_the_document(
            endpoint in PATTERN.trim_start_matches('^').trim_end_matches('$'),
            at in any::<prop::sample::Index>(),
            edit in prop::option::of(nearby_char()),
            cut in any::<bool>(),
        ) {
            let mut endpoint = endpoint;
            let at = endpoint
                .char_indices()
                .map(|(i, _)| i)
                .nth(at.index(endpoint.chars().count()))
                .unwrap_or(0);
            if cut {
                endpoint.truncate(at);
            }
            if let Some(c) = edit {
                endpoint.insert(at.min(endpoint.len()), c);
            }
            // The document's schema holds the length limit too.
            let server = check(&endpoint).is_ok()
                && endpoint.chars().count() <= super::super::MAX_ADDRESS_LEN;
            prop_assert_eq!(
                server,
                by_document().is_valid(&endpoint.clone().into()),
                "{:?}: check says {:?}", endpoint, check(&endpoint)
            );
        }
    }
}
