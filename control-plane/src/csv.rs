//! One CSV field, RFC 4180, safe to open in a spreadsheet: every CSV the
//! control plane writes (inbox and activity exports, analytics reports)
//! goes through [`field`], so they quote and defuse alike.

/// `text` as a CSV field: quoted when it holds a comma, quote or line
/// break (quotes doubled), and prefixed with `'` when it starts with a
/// character a spreadsheet would run as a formula (`=`, `+`, `-`, `@`,
/// tab, carriage return; OWASP's list). Numbers are not passed through
/// here (a negative amount is data, not a formula).
pub fn field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn quotes_and_defuses_formulas() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(field("line\nbreak"), "\"line\nbreak\"");
        assert_eq!(field("\tcmd"), "'\tcmd");
    }
}
