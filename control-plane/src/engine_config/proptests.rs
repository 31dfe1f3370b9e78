//! Property tests of the engine's config file (issue 15): any text is
//! either a valid [`EngineConfig`] or refused with an error that names the
//! file and says where (table and line) or which key was wrong, never a
//! panic; the commented example with one line changed reaches every
//! table's checks; valid retry settings are kept as written.
//!
//! Case counts are bounded so the module runs in seconds in `cargo test`;
//! `fuzz/` (see the README's "Fuzzing") runs longer.

use proptest::prelude::*;

use super::*;

const EXAMPLE: &str = include_str!("../../nudge.example.toml");
const FILE: &str = "nudge.toml";

/// What "a clear refusal" means for the config file: it starts with the
/// file's name; a parse error carries toml's message (and the line when
/// toml knows it), an invalid value names its key.
fn assert_clear(error: &EngineConfigError, text: &str) {
    let message = error.to_string();
    assert!(message.starts_with(&format!("{FILE}: ")), "{message}");
    match error {
        EngineConfigError::Read { .. } => panic!("nothing is read from disk: {message}"),
        EngineConfigError::Parse {
            message: detail,
            line,
            ..
        } => {
            assert!(!detail.trim().is_empty(), "no detail: {message}");
            if let Some(line) = line {
                // Lines are 1-based and within the text (one past its last
                // line when toml points at the end).
                let lines = text.split('\n').count();
                assert!(
                    (1..=lines + 1).contains(line),
                    "line {line} of {lines}: {message}"
                );
            }
        }
        EngineConfigError::Invalid {
            key,
            message: detail,
            ..
        } => {
            assert!(!key.trim().is_empty(), "no key: {message}");
            assert!(!detail.trim().is_empty(), "no detail: {message}");
        }
    }
}

fn check(text: &str) {
    if let Err(error) = EngineConfig::from_toml(text, FILE) {
        assert_clear(&error, text);
    }
}

/// TOML values of every type, and ones each key is likely to refuse.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(vec![
            "\"\"",
            "0",
            "-1",
            "1",
            "4294967296",
            "1e400",
            "nan",
            "true",
            "false",
            "[]",
            "{}",
            "\"5s\"",
            "\"0s\"",
            "\"1h\"",
            "\"999999999999d\"",
            "\"-1s\"",
            "\"soon\"",
            "\"email\"",
            "\"pigeon\"",
            "\"instant\"",
            "\"https://nudge.example.com\"",
            "\"http://\"",
            "\"ftp://x\"",
            "[\"email\", \"pigeon\"]",
            "[1, \"a\"]",
            "\"{{ data.x \"",
            "\"{% if %}\"",
            "\"{{ data.x }}\"",
            "1979-05-27T07:32:00Z",
            "{ x = 1 }",
            "\"\"\"\nmulti\n\"\"\"",
        ])
        .prop_map(str::to_owned),
        any::<i64>().prop_map(|n| n.to_string()),
        "[a-zA-Z0-9 .:/{}%_-]{0,12}".prop_map(|text| format!("{text:?}")),
    ]
}

/// One change to one line of the example file.
#[derive(Debug, Clone)]
enum Edit {
    /// The line is deleted.
    Delete,
    /// The value after `=` is replaced.
    Value(String),
    /// The key before `=` is replaced.
    Key(String),
    /// The line is written twice (a duplicate key or table).
    Duplicate,
    /// The line is cut after this many characters.
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        1 => Just(Edit::Delete),
        4 => toml_value().prop_map(Edit::Value),
        1 => "[a-z_]{1,12}".prop_map(Edit::Key),
        1 => Just(Edit::Duplicate),
        1 => (0usize..80).prop_map(Edit::Truncate),
    ]
}

fn apply(text: &str, edits: &[(usize, Edit)]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for (index, edit) in edits {
        if lines.is_empty() {
            break;
        }
        let at = index % lines.len();
        let line = lines[at].clone();
        match edit {
            Edit::Delete => {
                lines.remove(at);
            }
            Edit::Value(value) => {
                if let Some((key, _)) = line.split_once('=') {
                    lines[at] = format!("{key}= {value}");
                }
            }
            Edit::Key(key) => {
                if let Some((_, value)) = line.split_once('=') {
                    lines[at] = format!("{key} ={value}");
                }
            }
            Edit::Duplicate => lines.insert(at, line),
            Edit::Truncate(chars) => {
                lines[at] = line.chars().take(*chars).collect();
            }
        }
    }
    lines.join("\n")
}

/// Lines of the example that set something, so edits hit keys rather
/// than comments.
fn meaningful(text: &str) -> String {
    text.lines()
        .filter(|line| {
            let line = line.trim();
            !line.is_empty() && !line.starts_with('#')
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn duration() -> impl Strategy<Value = (u64, String)> {
    prop_oneof![
        (1u64..=3600).prop_map(|s| (s, format!("{s}s"))),
        (1u64..=48).prop_map(|h| (h * 3600, format!("{h}h"))),
        (1u64..=60).prop_map(|m| (m * 60, format!("{m}m"))),
    ]
}

proptest! {
    #![proptest_config(crate::proptest_cases::bounded(512))]

    #[test]
    fn arbitrary_text_loads_or_is_refused_clearly(text in ".{0,200}") {
        check(&text);
    }

    /// Random `key = value` lines under random known tables.
    #[test]
    fn random_tables_load_or_are_refused_clearly(
        lines in proptest::collection::vec(
            (
                proptest::option::of(proptest::sample::select(vec![
                    "[retry]", "[tracking]", "[concurrency]", "[devices]", "[retention]",
                    "[analytics]", "[types.t]", "[types.t.templates]",
                    "[types.t.templates.fallback]", "[[rules]]", "[channels.webhook]",
                    "[channels.sms]", "[types.t.templates.channels.pigeon]", "[[",
                ])),
                proptest::sample::select(vec![
                    "initial", "max", "max_attempts", "opens", "clicks", "email", "in_app",
                    "stale_after", "delete_after", "events", "enabled", "channels",
                    "critical", "frequency", "category", "subject", "text", "html", "name",
                    "on", "notify", "delay", "when", "secret", "timeout", "public_url",
                    "hots",
                ]),
                toml_value(),
            ),
            0..8,
        )
    ) {
        let mut text = String::new();
        for (table, key, value) in lines {
            if let Some(table) = table {
                text.push_str(table);
                text.push('\n');
            }
            text.push_str(&format!("{key} = {value}\n"));
        }
        check(&text);
    }

    /// The example file with a few of its lines changed: near-valid input
    /// that reaches every table's own checks (channels, types, templates,
    /// rules), and whose refusals must still be clear.
    #[test]
    fn edited_example_loads_or_is_refused_clearly(
        edits in proptest::collection::vec((any::<usize>(), edit()), 1..3),
    ) {
        check(&apply(&meaningful(EXAMPLE), &edits));
    }

    /// Valid retry settings load and are kept as written.
    #[test]
    fn valid_retry_settings_are_kept(
        (initial, initial_text) in duration(),
        (extra, extra_text) in duration(),
        max_attempts in 1u32..1000,
    ) {
        let max = initial + extra;
        let text = format!(
            "[retry]\ninitial = {initial_text:?}\nmax = \"{initial_text} {extra_text}\"\n\
             max_attempts = {max_attempts}\n"
        );
        let config = EngineConfig::from_toml(&text, FILE)
            .map_err(|error| TestCaseError::fail(error.to_string()))?;
        let policy = config.retry_policy();
        prop_assert_eq!(policy.initial, Duration::from_secs(initial));
        prop_assert_eq!(policy.max, Duration::from_secs(max));
        prop_assert_eq!(policy.max_attempts, max_attempts);
    }
}
