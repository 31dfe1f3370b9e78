//! Engagement tracking links in emails: the open pixel
//! (`{public_url}/v1/t/open/{token}.gif`, its token naming the delivery)
//! and click-tracking redirects (`{public_url}/v1/t/click/{token}`, its
//! token naming the delivery and the destination URL).
//!
//! # What it promises
//!
//! * **No open redirect.** A click token carries its destination inside
//!   the signed payload; the redirect goes to that destination and nowhere
//!   else, so nobody can make this server send a browser to a URL it did
//!   not put into a mail itself. Only absolute `http`/`https` URLs of
//!   visible ASCII (at most [`MAX_DESTINATION_BYTES`]) are signed, and
//!   [`TrackingLinks::verify_click`] checks that again.
//! * **Tokens of other kinds do not verify** (their own purpose labels,
//!   see [`crate::links`]): an unsubscribe or open token is no click token.
//! * **The operator's switches are honoured at both ends.** With `opens`
//!   off no pixel is added; with `clicks` off no link is rewritten; links
//!   already sent keep working (the pixel still answers, clicks still
//!   redirect), and the HTTP routes record nothing while a switch is off.
//!
//! Payloads: version (1), the delivery id (16 bytes), and for clicks the
//! destination's bytes.

use reqwest::Url;
use uuid::Uuid;

use super::{LinkConfigError, LinkError, Signer, html};

/// Longest destination a click link is made for; longer links are left as
/// they are (untracked).
pub const MAX_DESTINATION_BYTES: usize = 2048;

const VERSION: u8 = 1;
const OPEN_PURPOSE: &[u8] = b"nudge/open\0";
const CLICK_PURPOSE: &[u8] = b"nudge/click\0";

/// What a click link says: `delivery_id`'s recipient followed a link to
/// `destination`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickClaims {
    pub delivery_id: Uuid,
    pub destination: String,
}

/// Makes and checks tracking links, and instruments email HTML with them.
/// Cheap to clone; the secret never reaches `Debug` output.
#[derive(Debug, Clone)]
pub struct TrackingLinks {
    /// `public_url` without a trailing `/`.
    base_url: String,
    signer: Signer,
    /// `[tracking] opens`: add the open pixel, record opens.
    opens: bool,
    /// `[tracking] clicks`: rewrite links, record clicks.
    clicks: bool,
}

impl TrackingLinks {
    /// Links under `public_url` (already checked to be an http(s) URL),
    /// signed with `secret` (the `link_secret`, at least
    /// [`super::MIN_SECRET_BYTES`]), with the operator's switches.
    pub fn new(
        public_url: &str,
        secret: &str,
        opens: bool,
        clicks: bool,
    ) -> Result<Self, LinkConfigError> {
        Ok(TrackingLinks {
            base_url: public_url.trim_end_matches('/').to_owned(),
            signer: Signer::new(secret)?,
            opens,
            clicks,
        })
    }

    /// Whether opens are tracked (pixel added, opens recorded).
    pub fn opens(&self) -> bool {
        self.opens
    }

    /// Whether clicks are tracked (links rewritten, clicks recorded).
    pub fn clicks(&self) -> bool {
        self.clicks
    }

    /// `{public_url}/v1/t/open/{token}.gif`.
    pub fn open_url(&self, delivery_id: Uuid) -> String {
        format!(
            "{}/v1/t/open/{}.gif",
            self.base_url,
            self.sign_open(delivery_id)
        )
    }

    pub fn sign_open(&self, delivery_id: Uuid) -> String {
        let mut payload = Vec::with_capacity(1 + 16 + 16);
        payload.push(VERSION);
        payload.extend_from_slice(delivery_id.as_bytes());
        self.signer.sign(OPEN_PURPOSE, payload)
    }

    /// The delivery of an open token this server signed; a trailing
    /// `.gif` is allowed.
    pub fn verify_open(&self, token: &str) -> Result<Uuid, LinkError> {
        let token = token.strip_suffix(".gif").unwrap_or(token);
        let payload = self.signer.verify(OPEN_PURPOSE, token, 1 + 16)?;
        match payload.split_first() {
            Some((&VERSION, id)) if id.len() == 16 => {
                Uuid::from_slice(id).map_err(|_| LinkError::Malformed)
            }
            _ => Err(LinkError::Malformed),
        }
    }

    /// `{public_url}/v1/t/click/{token}`, or `None` when `destination`
    /// cannot be tracked (see [`is_trackable`]).
    pub fn click_url(&self, delivery_id: Uuid, destination: &str) -> Option<String> {
        let token = self.sign_click(delivery_id, destination)?;
        Some(format!("{}/v1/t/click/{token}", self.base_url))
    }

    /// The token of a click on `destination`; `None` when it cannot be
    /// tracked.
    pub fn sign_click(&self, delivery_id: Uuid, destination: &str) -> Option<String> {
        if !is_trackable(destination) {
            return None;
        }
        let mut payload = Vec::with_capacity(1 + 16 + destination.len() + 16);
        payload.push(VERSION);
        payload.extend_from_slice(delivery_id.as_bytes());
        payload.extend_from_slice(destination.as_bytes());
        Some(self.signer.sign(CLICK_PURPOSE, payload))
    }

    /// The claims of a click token this server signed. The tag is checked
    /// before the payload is read, and the destination is checked again.
    pub fn verify_click(&self, token: &str) -> Result<ClickClaims, LinkError> {
        let payload = self.signer.verify(CLICK_PURPOSE, token, 1 + 16 + 1)?;
        let Some((&VERSION, rest)) = payload.split_first() else {
            return Err(LinkError::Malformed);
        };
        let (id, destination) = rest.split_at_checked(16).ok_or(LinkError::Malformed)?;
        let delivery_id = Uuid::from_slice(id).map_err(|_| LinkError::Malformed)?;
        let destination =
            String::from_utf8(destination.to_vec()).map_err(|_| LinkError::Malformed)?;
        if !is_trackable(&destination) {
            return Err(LinkError::Malformed);
        }
        Ok(ClickClaims {
            delivery_id,
            destination,
        })
    }

    /// `html` instrumented for `delivery_id`, as the switches say: every
    /// trackable `<a href>` through a click link (except this server's own
    /// unsubscribe and tracking links), and the open pixel before
    /// `</body>`. An empty body stays empty (a text-only email has no
    /// place for either).
    pub fn instrument_html(&self, delivery_id: Uuid, html: &str) -> String {
        if html.trim().is_empty() {
            return html.to_owned();
        }
        let own = [
            format!("{}/v1/unsubscribe/", self.base_url),
            format!("{}/v1/t/", self.base_url),
        ];
        let mut out = if self.clicks {
            html::rewrite_links(html, |url| {
                if own.iter().any(|prefix| url.starts_with(prefix.as_str())) {
                    return None;
                }
                self.click_url(delivery_id, url)
            })
        } else {
            html.to_owned()
        };
        if self.opens {
            let pixel = format!(
                r#"<img src="{}" width="1" height="1" alt="" border="0" style="display:none">"#,
                self.open_url(delivery_id)
            );
            out = html::insert_before_body_end(&out, &pixel);
        }
        out
    }
}

/// Whether a click link can be made for `destination`: an absolute
/// `http`/`https` URL with a host, at most [`MAX_DESTINATION_BYTES`], of
/// visible ASCII only (so it goes into a `Location` header as it is;
/// internationalised URLs are left untracked).
pub fn is_trackable(destination: &str) -> bool {
    if destination.is_empty()
        || destination.len() > MAX_DESTINATION_BYTES
        || !destination.bytes().all(|b| b.is_ascii_graphic())
    {
        return false;
    }
    Url::parse(destination)
        .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.host_str().is_some())
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;
    use crate::channels::ChannelKind;
    use crate::links::{UnsubscribeClaims, UnsubscribeLinks};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const DESTINATION: &str = "https://shop.example/cart?item=42&ref=mail#top";

    fn links() -> TrackingLinks {
        TrackingLinks::new("https://nudge.example.com/", SECRET, true, true).unwrap()
    }

    fn id() -> Uuid {
        Uuid::parse_str("01950000-0000-7000-8000-000000000001").unwrap()
    }

    #[test]
    fn open_and_click_tokens_verify_to_what_they_carry() {
        let links = links();
        let open = links.open_url(id());
        let token = open
            .strip_prefix("https://nudge.example.com/v1/t/open/")
            .unwrap();
        assert!(token.ends_with(".gif"), "{open}");
        assert_eq!(links.verify_open(token), Ok(id()));
        assert_eq!(
            links.verify_open(token.strip_suffix(".gif").unwrap()),
            Ok(id())
        );

        let click = links.click_url(id(), DESTINATION).unwrap();
        let token = click
            .strip_prefix("https://nudge.example.com/v1/t/click/")
            .unwrap();
        assert_eq!(
            links.verify_click(token),
            Ok(ClickClaims {
                delivery_id: id(),
                destination: DESTINATION.to_owned()
            })
        );
    }

    #[test]
    fn every_altered_byte_of_a_click_token_fails() {
        let links = links();
        let token = links.sign_click(id(), DESTINATION).unwrap();
        let bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for index in 0..bytes.len() {
            let mut altered = bytes.clone();
            altered[index] ^= 0x01;
            let altered = URL_SAFE_NO_PAD.encode(altered);
            assert!(
                links.verify_click(&altered).is_err(),
                "byte {index} altered and still verified"
            );
        }
        // Another destination under the same tag.
        let mut swapped = bytes;
        let at = 1 + 16 + "https://".len();
        swapped[at..at + 4].copy_from_slice(b"evil");
        assert_eq!(
            links.verify_click(&URL_SAFE_NO_PAD.encode(swapped)),
            Err(LinkError::BadSignature)
        );
        for mangled in ["", "abc", "not base64!", &token[..token.len() - 3]] {
            assert!(links.verify_click(mangled).is_err(), "{mangled:?}");
        }
    }

    #[test]
    fn kinds_of_links_are_kept_apart() {
        let links = links();
        let open = links.sign_open(id());
        let click = links.sign_click(id(), DESTINATION).unwrap();
        assert!(links.verify_click(&open).is_err());
        assert!(links.verify_open(&click).is_err());
        let unsubscribe = UnsubscribeLinks::new("https://nudge.example.com", SECRET)
            .unwrap()
            .sign_unsubscribe(&UnsubscribeClaims {
                user_id: "u-1".to_owned(),
                notification_type: "https://evil.example/".to_owned(),
                channel: ChannelKind::Email,
                issued_at: jiff::Timestamp::UNIX_EPOCH,
            })
            .unwrap();
        assert_eq!(
            links.verify_click(&unsubscribe),
            Err(LinkError::BadSignature)
        );
        assert!(links.verify_open(&unsubscribe).is_err());
        // And a click token signed with another secret.
        let other =
            TrackingLinks::new("https://nudge.example.com", &SECRET.repeat(2), true, true).unwrap();
        let foreign = other.sign_click(id(), DESTINATION).unwrap();
        assert_eq!(links.verify_click(&foreign), Err(LinkError::BadSignature));
    }

    #[test]
    fn only_plain_http_destinations_are_signed() {
        let links = links();
        for bad in [
            "javascript:alert(1)",
            "mailto:ada@example.com",
            "data:text/html,hi",
            "//evil.example/",
            "/relative",
            "ftp://files.example/",
            "https://",
            "https://ex ample.com/",
            "https://example.com/ü",
            "",
        ] {
            assert!(links.click_url(id(), bad).is_none(), "{bad:?}");
        }
        let long = format!("https://x.example/{}", "a".repeat(MAX_DESTINATION_BYTES));
        assert!(links.click_url(id(), &long).is_none());
        assert!(links.click_url(id(), "HTTP://X.EXAMPLE/").is_some());
    }

    #[test]
    fn html_gets_click_links_and_a_pixel_as_switched() {
        let html = "<html><body><p><a href=\"https://shop.example/?a=1&amp;b=2\">Shop</a> \
                    <a href=\"mailto:help@shop.example\">Help</a> \
                    <a href=\"https://nudge.example.com/v1/unsubscribe/abc\">Unsubscribe</a></p></body></html>";
        let links = links();
        let out = links.instrument_html(id(), html);
        let click = links
            .click_url(id(), "https://shop.example/?a=1&b=2")
            .unwrap();
        assert!(
            out.contains(&format!("<a href=\"{click}\">Shop</a>")),
            "{out}"
        );
        assert!(out.contains("href=\"mailto:help@shop.example\""), "{out}");
        assert!(
            out.contains("href=\"https://nudge.example.com/v1/unsubscribe/abc\""),
            "{out}"
        );
        let pixel = format!(
            "<img src=\"{}\" width=\"1\" height=\"1\" alt=\"\" border=\"0\" style=\"display:none\"></body>",
            links.open_url(id())
        );
        assert!(out.contains(&pixel), "{out}");

        let opens_only =
            TrackingLinks::new("https://nudge.example.com", SECRET, true, false).unwrap();
        let out = opens_only.instrument_html(id(), html);
        assert!(
            out.contains("href=\"https://shop.example/?a=1&amp;b=2\""),
            "{out}"
        );
        assert!(out.contains("/v1/t/open/"), "{out}");
        let off = TrackingLinks::new("https://nudge.example.com", SECRET, false, false).unwrap();
        assert_eq!(off.instrument_html(id(), html), html);
        assert_eq!(links.instrument_html(id(), ""), "");
    }

    #[test]
    fn the_secret_is_not_printed() {
        assert!(!format!("{:?}", links()).contains(SECRET));
    }
}
