//! Property tests of template compilation and rendering (issue 15): any
//! source in any field is either stored or refused with a syntax error
//! that names the type, channel and field; a stored template renders or
//! fails with an error that says which field and what went wrong, never a
//! panic; plain text and simple substitutions come out as written.
//!
//! Case counts are bounded so the module runs in seconds in `cargo test`;
//! `fuzz/` (see the README's "Fuzzing") runs longer.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

/// A template with `source` in `field` and the other fields empty.
fn template_with(field: Field, source: String) -> Template {
    let mut template = Template::default();
    match field {
        Field::Subject => template.subject = source,
        Field::Title => template.title = source,
        Field::Text => template.text = source,
        Field::Html => template.html = source,
    }
    template
}

fn field() -> impl Strategy<Value = Field> {
    proptest::sample::select(Field::ALL.to_vec())
}

fn channel() -> impl Strategy<Value = Option<ChannelKind>> {
    proptest::option::of(proptest::sample::select(ChannelKind::ALL.to_vec()))
}

/// Pieces of minijinja: well-formed tags over the render context, broken
/// and unbalanced ones, filters and tests, and plain text. Loops only run
/// over the (small) generated data, so every render is short.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(vec![
            "{{ data.a }}",
            "{{ data.b.c }}",
            "{{ user.name }}",
            "{{ user.name | default('there') }}",
            "{{ notification.type }}",
            "{{ notification.id | upper }}",
            "{{ data | tojson }}",
            "{{ data.a | safe }}",
            "{{ data.a + 1 }}",
            "{{ data.a ~ user.email }}",
            "{{ data.list[0] }}",
            "{{ data.list | length }}",
            "{{ 1 / 0 }}",
            "{{ missing }}",
            "{% if data.a is defined %}",
            "{% if data.a %}",
            "{% elif user.name %}",
            "{% else %}",
            "{% endif %}",
            "{% for item in data.list %}",
            "{% for key, value in data | items %}",
            "{{ loop.index }}",
            "{% endfor %}",
            "{% set x = data.a %}",
            "{{ x }}",
            "{% raw %}",
            "{% endraw %}",
            "{# comment #}",
            "{{",
            "}}",
            "{%",
            "%}",
            "{#",
            "#}",
            "{{ }}",
            "{% %}",
            "{{ data.a ",
            "{% if %}",
            "{% endfor %}{% endif %}",
            "{% macro m(x) %}{{ x }}{% endmacro %}{{ m(data.a) }}",
            "{% include 'other' %}",
            "{% extends 'base' %}",
            "{{ '<b>' }}",
            "<p>&amp;</p>",
        ])
        .prop_map(str::to_owned),
        "[a-z <>&\"'\n]{0,8}",
        "\\{\\{ [a-z_.|()'0-9 ]{0,12} \\}\\}",
        "\\{% [a-z_.|()'0-9 ]{0,12} %\\}",
    ]
}

fn source() -> impl Strategy<Value = String> {
    proptest::collection::vec(piece(), 0..8).prop_map(|pieces| pieces.concat())
}

/// Small render data of every JSON type, so tags meet strings, numbers,
/// lists, objects and absence.
fn data() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,8}".prop_map(Value::String),
    ];
    let value = leaf.prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            proptest::collection::btree_map("[a-c]|list|name", inner, 0..3)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    });
    proptest::collection::btree_map("[a-c]|list|name|email", value, 0..4)
        .prop_map(|map| Value::Object(map.into_iter().collect()))
}

/// What "a clear refusal" means here: the message names the type, the
/// channel (or `*`) and the field, and says what went wrong.
fn assert_clear(error: &TemplateError, field: Field, channel: Option<ChannelKind>) {
    let message = error.to_string();
    let label = channel.map_or("*", ChannelKind::as_str);
    match error {
        TemplateError::Syntax {
            notification_type,
            channel: named,
            field: named_field,
            detail,
            ..
        }
        | TemplateError::Render {
            notification_type,
            channel: named,
            field: named_field,
            detail,
            ..
        } => {
            assert_eq!(notification_type, "t", "{message}");
            assert_eq!(named, label, "{message}");
            assert_eq!(*named_field, field, "{message}");
            assert!(!detail.trim().is_empty(), "no detail: {message}");
            assert!(
                message.starts_with(&format!("template t/{label}/{field}")),
                "{message}"
            );
        }
        other => panic!("unexpected error for a stored template: {other:?}"),
    }
}

fn input<'a>(data: &'a Value, user: &'a Value) -> RenderInput<'a> {
    RenderInput {
        notification_type: "t",
        notification_id: "n-1",
        data,
        user,
    }
}

proptest! {
    #![proptest_config(crate::proptest_cases::bounded(1000))]

    /// Any text at all: stored or refused clearly, and what is stored
    /// renders or fails clearly.
    #[test]
    fn arbitrary_sources_compile_or_are_refused_clearly(
        field in field(),
        channel in channel(),
        source in ".{0,64}",
        data in data(),
    ) {
        check_source(field, channel, source, &data);
    }

    /// Random tags, balanced or not: reaches the parser's and the
    /// renderer's deeper paths (loops, conditions, filters, strict
    /// undefined).
    #[test]
    fn random_tags_compile_or_are_refused_clearly(
        field in field(),
        channel in channel(),
        source in source(),
        data in data(),
        user in data(),
    ) {
        let mut set = TemplateSet::new();
        match set.set("t", channel, template_with(field, source)) {
            Err(error) => assert_clear(&error, field, channel),
            Ok(()) => {
                let target = channel.unwrap_or(ChannelKind::InApp);
                if let Err(error) = set.render(target, input(&data, &user)) {
                    assert_clear(&error, field, channel);
                }
            }
        }
    }

    /// Text without template syntax renders as written, in every field
    /// (literal text is never escaped, even in `html`), except that one
    /// trailing newline is dropped, as Jinja does by default
    /// (`keep_trailing_newline` off): the end of a line is not content.
    #[test]
    fn plain_text_renders_verbatim(field in field(), text in "[^{}%#]{0,64}") {
        let mut set = TemplateSet::new();
        set.set("t", None, template_with(field, text.clone())).unwrap();
        let rendered = set.render(ChannelKind::Email, input(&json!({}), &json!({}))).unwrap();
        let out = match field {
            Field::Subject => rendered.subject,
            Field::Title => rendered.title,
            Field::Text => rendered.text,
            Field::Html => rendered.html,
        };
        // minijinja's rule: one `\n`, then one `\r`, each if present.
        let expected = text.strip_suffix('\n').unwrap_or(&text);
        let expected = expected.strip_suffix('\r').unwrap_or(expected);
        prop_assert_eq!(out, expected);
    }

    /// A substituted string comes out unchanged in plain-text fields and
    /// HTML-escaped in `html`.
    #[test]
    fn substitution_keeps_text_and_escapes_html(value in ".{0,32}") {
        let mut set = TemplateSet::new();
        let source = "{{ data.a }}".to_owned();
        let template = Template {
            text: source.clone(),
            html: source,
            ..Template::default()
        };
        set.set("t", None, template).unwrap();
        let data = json!({ "a": value });
        let rendered = set.render(ChannelKind::Email, input(&data, &json!({}))).unwrap();
        prop_assert_eq!(&rendered.text, &value);
        let escaped = value
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#x27;")
            .replace('/', "&#x2f;");
        prop_assert_eq!(&rendered.html, &escaped);
    }

    /// Stored sets survive their persisted (JSON) form.
    #[test]
    fn stored_sets_round_trip_through_json(
        field in field(),
        channel in channel(),
        source in source(),
        type_name in "[A-Za-z0-9_.-]{1,16}",
    ) {
        let mut set = TemplateSet::new();
        if set.set(&type_name, channel, template_with(field, source)).is_ok() {
            let json = serde_json::to_string(&set).unwrap();
            let back: TemplateSet = serde_json::from_str(&json)
                .map_err(|error| TestCaseError::fail(error.to_string()))?;
            prop_assert_eq!(back.definitions(), set.definitions());
        }
    }

    /// A type name outside the safe alphabet is refused by name, and
    /// nothing is stored.
    #[test]
    fn type_names_are_checked(type_name in ".{0,140}") {
        let mut set = TemplateSet::new();
        let valid = !type_name.is_empty()
            && type_name.len() <= 128
            && type_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        match set.set(&type_name, None, Template::default()) {
            Ok(()) => prop_assert!(valid),
            Err(error) => {
                prop_assert!(!valid);
                prop_assert_eq!(error, TemplateError::InvalidType(type_name));
                prop_assert!(set.definitions().is_empty());
            }
        }
    }
}

fn check_source(field: Field, channel: Option<ChannelKind>, source: String, data: &Value) {
    let template = template_with(field, source);
    match TemplateSet::validate("t", channel, &template) {
        Err(error) => assert_clear(&error, field, channel),
        Ok(()) => {
            let mut set = TemplateSet::new();
            set.set("t", channel, template)
                .expect("validate and set agree");
            let target = channel.unwrap_or(ChannelKind::InApp);
            if let Err(error) = set.render(target, input(data, &json!({}))) {
                assert_clear(&error, field, channel);
            }
        }
    }
}
