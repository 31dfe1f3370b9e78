//! Reading `application/x-www-form-urlencoded` bodies (the WHATWG form
//! encoding: `&`-separated `name=value`, `+` for space, `%XX` bytes), which
//! mail providers' one-click POSTs and Twilio's callbacks use.
//!
//! Strict where leniency could make two readers disagree: a `%` not
//! followed by two hex digits, or bytes that do not decode to UTF-8, refuse
//! the whole body instead of being passed through, because a signature
//! check and the code acting on the form must see the same values.

/// Why a body is not a form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("the form has a bad percent escape (`%` must be followed by two hex digits)")]
    BadEscape,
    #[error("the form does not decode to UTF-8 text")]
    NotUtf8,
}

/// The body's `(name, value)` pairs in order; empty segments (`a=1&&b=2`)
/// are skipped and a segment without `=` is a name with an empty value.
pub fn parse(body: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    body.split(|byte| *byte == b'&')
        .filter(|segment| !segment.is_empty())
        .map(|segment| {
            let (name, value) = match segment.iter().position(|byte| *byte == b'=') {
                Some(at) => (&segment[..at], &segment[at + 1..]),
                None => (segment, &[][..]),
            };
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

fn decode(text: &[u8]) -> Result<String, FormError> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.iter();
    while let Some(&byte) = rest.next() {
        match byte {
            b'+' => bytes.push(b' '),
            b'%' => {
                let high = rest.next().and_then(|b| hex(*b));
                let low = rest.next().and_then(|b| hex(*b));
                match (high, low) {
                    (Some(high), Some(low)) => bytes.push(high << 4 | low),
                    _ => return Err(FormError::BadEscape),
                }
            }
            other => bytes.push(other),
        }
    }
    String::from_utf8(bytes).map_err(|_| FormError::NotUtf8)
}

fn hex(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|digit| digit as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn decodes_forms() {
        assert_eq!(
            parse(b"List-Unsubscribe=One-Click").unwrap(),
            pairs(&[("List-Unsubscribe", "One-Click")])
        );
        assert_eq!(
            parse(b"To=%2B15005550010&Body=Hi+there%21&&Empty=&Flag&b%C3%A4r=%E2%9C%93").unwrap(),
            pairs(&[
                ("To", "+15005550010"),
                ("Body", "Hi there!"),
                ("Empty", ""),
                ("Flag", ""),
                ("bär", "✓"),
            ])
        );
        assert_eq!(parse(b"").unwrap(), pairs(&[]));
        assert_eq!(parse(b"a=1=2").unwrap(), pairs(&[("a", "1=2")]));
    }

    #[test]
    fn refuses_what_it_cannot_read_exactly() {
        assert_eq!(parse(b"a=%2"), Err(FormError::BadEscape));
        assert_eq!(parse(b"a=%zz"), Err(FormError::BadEscape));
        assert_eq!(parse(b"a=%ff"), Err(FormError::NotUtf8));
        assert_eq!(parse(b"a=\xff"), Err(FormError::NotUtf8));
    }
}
