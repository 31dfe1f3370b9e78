//! Just enough HTML reading to instrument an email for tracking: rewrite
//! the `href` of `<a>` tags, and put a snippet (the open pixel) before
//! `</body>`. A scan, not a parser, and deliberately conservative: what it
//! does not understand it leaves exactly as it was, so the worst case is an
//! untracked link, never a broken mail.
//!
//! # What it handles, and its limits
//!
//! * `<a …>` start tags in any letter case, with the `href` value in
//!   double quotes, single quotes or unquoted, anywhere among the other
//!   attributes; the first `href` of a tag counts (as in browsers).
//! * The value is entity-decoded before the caller sees it (`&amp;`,
//!   `&lt;`, `&gt;`, `&quot;`, `&apos;`, numeric `&#…;` and `&#x…;`), so
//!   `?a=1&amp;b=2` is the URL `?a=1&b=2`. A bare `&` not ending a
//!   reference stays literal, as browsers read it. A named reference it
//!   does not know leaves the link alone.
//! * Not rewritten: links in other tags (`<area>`, Outlook's VML
//!   `<v:roundrect href>`), URLs in CSS or in the text part of the mail.
//!   Comments are not skipped: a link in an Outlook conditional comment
//!   (`<!--[if mso]>…<![endif]-->`) is rewritten like any other, which is
//!   what Outlook will show. A tag cut short (no closing `>` or quote)
//!   ends the rewriting; the rest is copied as it is.

/// `html` with the `href` of every `<a>` tag passed (entity-decoded and
/// trimmed) to `rewrite`; where it answers `Some(url)`, that URL replaces
/// the value (attribute-escaped, in double quotes).
pub fn rewrite_links(html: &str, mut rewrite: impl FnMut(&str) -> Option<String>) -> String {
    let bytes = html.as_bytes();
    let mut out = String::with_capacity(html.len() + html.len() / 4);
    // `html[..copied]` is in `out` already.
    let mut copied = 0;
    let mut at = 0;
    while let Some(found) = html[at..].find('<') {
        let start = at + found;
        at = start + 1;
        let is_a = bytes.get(at).is_some_and(|b| b.eq_ignore_ascii_case(&b'a'))
            && bytes
                .get(at + 1)
                .is_some_and(|b| b.is_ascii_whitespace() || matches!(b, b'>' | b'/'));
        if !is_a {
            continue;
        }
        let Some(tag) = read_tag(bytes, at + 1) else {
            break;
        };
        at = tag.end;
        let Some(href) = tag.href else {
            continue;
        };
        let Some(url) = decode_entities(&html[href.start..href.end]) else {
            continue;
        };
        let Some(replacement) = rewrite(url.trim()) else {
            continue;
        };
        out.push_str(&html[copied..href.outer_start]);
        out.push('"');
        out.push_str(&escape_attribute(&replacement));
        out.push('"');
        copied = href.outer_end;
    }
    out.push_str(&html[copied..]);
    out
}

/// `html` with `snippet` before its last `</body>` (any case), or at the
/// end when there is none.
pub fn insert_before_body_end(html: &str, snippet: &str) -> String {
    // ASCII lowercasing keeps every byte where it was.
    let at = html
        .to_ascii_lowercase()
        .rfind("</body")
        .unwrap_or(html.len());
    let mut out = String::with_capacity(html.len() + snippet.len());
    out.push_str(&html[..at]);
    out.push_str(snippet);
    out.push_str(&html[at..]);
    out
}

/// Where an `href` value sits in the text.
struct Href {
    /// The value itself, without quotes.
    start: usize,
    end: usize,
    /// The value with its quotes, if any: what a replacement replaces.
    outer_start: usize,
    outer_end: usize,
}

/// A start tag read from just after its name.
struct Tag {
    /// Just after the closing `>`.
    end: usize,
    href: Option<Href>,
}

/// Reads the attributes of a start tag from `at` to its `>`; `None` when
/// the tag is cut short (no `>`, or an unclosed quote).
fn read_tag(bytes: &[u8], mut at: usize) -> Option<Tag> {
    let mut href = None;
    loop {
        while bytes
            .get(at)
            .is_some_and(|b| b.is_ascii_whitespace() || *b == b'/')
        {
            at += 1;
        }
        if *bytes.get(at)? == b'>' {
            return Some(Tag { end: at + 1, href });
        }
        let name_start = at;
        while bytes
            .get(at)
            .is_some_and(|b| !(b.is_ascii_whitespace() || matches!(b, b'=' | b'>' | b'/')))
        {
            at += 1;
        }
        let name = &bytes[name_start..at];
        while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        if bytes.get(at) != Some(&b'=') {
            // An attribute without a value (`download`).
            continue;
        }
        at += 1;
        while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        let outer_start = at;
        let (start, end, outer_end) = match *bytes.get(at)? {
            quote @ (b'"' | b'\'') => {
                let close = at + 1 + bytes[at + 1..].iter().position(|b| *b == quote)?;
                (at + 1, close, close + 1)
            }
            _ => {
                let end = at
                    + bytes[at..]
                        .iter()
                        .position(|b| b.is_ascii_whitespace() || *b == b'>')
                        .unwrap_or(bytes.len() - at);
                (at, end, end)
            }
        };
        at = outer_end;
        if href.is_none() && name.eq_ignore_ascii_case(b"href") {
            href = Some(Href {
                start,
                end,
                outer_start,
                outer_end,
            });
        }
    }
}

/// The attribute value `raw` with its character references decoded, or
/// `None` when it has a named reference this reader does not know.
fn decode_entities(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        // A reference is `&` + name or `#`digits + `;`; anything else is a
        // literal ampersand.
        let name_len = rest[1..]
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'#')
            .count();
        if name_len == 0 || rest.as_bytes().get(1 + name_len) != Some(&b';') {
            out.push('&');
            rest = &rest[1..];
            continue;
        }
        let name = &rest[1..1 + name_len];
        let decoded = match name {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) =
                    name.strip_prefix("#x").or_else(|| name.strip_prefix("#X"))
                {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(decimal) = name.strip_prefix('#') {
                    decimal.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)?
            }
        };
        out.push(decoded);
        rest = &rest[name_len + 2..];
    }
    out.push_str(rest);
    Some(out)
}

fn escape_attribute(value: &str) -> String {
    value.replace('&', "&amp;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag_all(html: &str) -> String {
        rewrite_links(html, |url| {
            url.starts_with("http")
                .then(|| format!("https://t.example/c?u={url}"))
        })
    }

    #[test]
    fn rewrites_hrefs_in_a_tags_only() {
        let html = r#"<p>Hi <a href="https://a.example/x">one</a>, <A class=btn HREF='http://b.example/'>two</A>,
<a id=x href=https://c.example/y>three</a> <area href="https://d.example/"> <abbr title="x">y</abbr>
<a href="mailto:ada@example.com">mail</a> <a name="top">anchor</a></p>"#;
        let expected = r#"<p>Hi <a href="https://t.example/c?u=https://a.example/x">one</a>, <A class=btn HREF="https://t.example/c?u=http://b.example/">two</A>,
<a id=x href="https://t.example/c?u=https://c.example/y">three</a> <area href="https://d.example/"> <abbr title="x">y</abbr>
<a href="mailto:ada@example.com">mail</a> <a name="top">anchor</a></p>"#;
        assert_eq!(tag_all(html), expected);
    }

    #[test]
    fn decodes_entities_and_escapes_the_replacement() {
        let mut seen = Vec::new();
        let out = rewrite_links(
            r#"<a href=" https://x.example/?a=1&amp;b=2&c=3&#38;d=&#x34; ">x</a><a href="https://x.example/&nbsp;">y</a>"#,
            |url| {
                seen.push(url.to_owned());
                Some("https://t.example/?q=1&r=\"2\"".to_owned())
            },
        );
        assert_eq!(seen, ["https://x.example/?a=1&b=2&c=3&d=4"]);
        assert_eq!(
            out,
            r#"<a href="https://t.example/?q=1&amp;r=&quot;2&quot;">x</a><a href="https://x.example/&nbsp;">y</a>"#
        );
    }

    #[test]
    fn quotes_and_odd_attributes_do_not_confuse_it() {
        let html = r#"<a title="a > b" data-x='say "hi"' download href="https://a.example/">x</a><a/href="https://b.example/">y</a>"#;
        let out = tag_all(html);
        assert!(
            out.contains(r#"href="https://t.example/c?u=https://a.example/""#),
            "{out}"
        );
        assert!(
            out.contains(r#"title="a > b" data-x='say "hi"' download"#),
            "{out}"
        );
        assert!(
            out.contains(r#"href="https://t.example/c?u=https://b.example/""#),
            "{out}"
        );
        // The first href counts.
        let out = tag_all(r#"<a href="https://one.example/" href="https://two.example/">"#);
        assert!(
            out.contains("u=https://one.example/\" href=\"https://two.example/\""),
            "{out}"
        );
    }

    #[test]
    fn cut_short_markup_is_left_alone() {
        for html in [
            r#"<a href="https://a.example/"#,
            r#"<a href='https://a.example/">x"#,
            "<a",
            "<",
            "text only, no tags",
            "",
        ] {
            assert_eq!(tag_all(html), html);
        }
        let html = r#"<a href="https://a.example/">ok</a> then <a href="https://b.example/"#;
        let out = tag_all(html);
        assert!(
            out.starts_with(r#"<a href="https://t.example/c?u=https://a.example/">ok</a>"#),
            "{out}"
        );
        assert!(out.ends_with(r#"<a href="https://b.example/"#), "{out}");
    }

    #[test]
    fn non_ascii_text_around_links_survives() {
        let html = "<p>Grüße — <a href=\"https://ü.example/\">ü</a> ✓</p>";
        let out = rewrite_links(html, |_| Some("https://t.example/".to_owned()));
        assert_eq!(out, "<p>Grüße — <a href=\"https://t.example/\">ü</a> ✓</p>");
    }

    #[test]
    fn the_pixel_goes_before_the_last_body_end() {
        assert_eq!(
            insert_before_body_end("<html><BODY>x</BODY></html>", "<img>"),
            "<html><BODY>x<img></BODY></html>"
        );
        assert_eq!(insert_before_body_end("<p>x</p>", "<img>"), "<p>x</p><img>");
        assert_eq!(
            insert_before_body_end("<body>a</body> b </body >", "<img>"),
            "<body>a</body> b <img></body >"
        );
    }
}
