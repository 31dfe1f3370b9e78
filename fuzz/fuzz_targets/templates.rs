//! Templates (`control-plane/src/templates`): the first byte picks the
//! field and channel, the rest up to a NUL is the source, the remainder
//! (if JSON) is the render data. A source compiles or is refused naming the
//! type, channel and field; a stored template renders or fails the same
//! way; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nudge_control_plane::channels::ChannelKind;
use nudge_control_plane::templates::{Field, RenderInput, Template, TemplateSet};

fuzz_target!(|input: &[u8]| {
    let Some((&pick, rest)) = input.split_first() else {
        return;
    };
    let (source, data) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(source) = std::str::from_utf8(source) else {
        return;
    };
    let data: serde_json::Value = serde_json::from_slice(data).unwrap_or_default();
    let field = Field::ALL[usize::from(pick & 3)];
    let channel = ChannelKind::ALL[usize::from(pick >> 2) % ChannelKind::ALL.len()];
    let mut template = Template::default();
    match field {
        Field::Subject => template.subject = source.to_owned(),
        Field::Title => template.title = source.to_owned(),
        Field::Text => template.text = source.to_owned(),
        Field::Html => template.html = source.to_owned(),
    }
    let prefix = format!("template t/{channel}/{field}");
    let mut set = TemplateSet::new();
    if let Err(error) = set.set("t", Some(channel), template.clone()) {
        let message = error.to_string();
        assert!(message.starts_with(&prefix), "{message}");
        return;
    }
    let input = RenderInput {
        notification_type: "t",
        notification_id: "n",
        data: &data,
        user: &data,
    };
    if let Err(error) = set.render(channel, input) {
        let message = error.to_string();
        assert!(message.starts_with(&prefix), "{message}");
    }
    // The same source as a digest template, over the data as one item.
    if set.set_digest("t", Some(channel), template).is_ok()
        && let Err(error) = set.render_digest("t", channel, &[data.clone()], &data)
    {
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("template t/{channel}/digest/{field}")),
            "{message}"
        );
    }
});
