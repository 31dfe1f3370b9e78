//! Notification templates: one [`Template`] (subject, title, text and HTML
//! body, each a minijinja source) per notification type and channel, with a
//! per-type fallback used for any channel that has none of its own.
//!
//! # Promises
//!
//! * **Validated on the way in.** A [`TemplateSet`] only ever holds templates
//!   that parse: [`TemplateSet::set`] and [`TemplateSet::from_definitions`]
//!   (which deserialization goes through) compile every field and report a
//!   syntax error with the type, channel, field and minijinja's line.
//! * **Strict undefined.** The environment uses
//!   [`UndefinedBehavior::Strict`]: printing, iterating or testing the
//!   truthiness of a missing variable is an error ([`TemplateError::Render`])
//!   naming the field, the line and the failing expression, rather than an
//!   email that says "Hello ,". Templates that want optional values say so:
//!   `{% if user.name is defined %}` or `{{ user.name | default("there") }}`.
//! * **HTML escaping for the `html` field only.** Subject, title and text are
//!   plain text and are never escaped; `html` escapes every `{{ … }}` unless
//!   marked `| safe`.
//! * **Bounded work per render.** A template runs on the engine's and the
//!   dispatcher's threads for every notification, so a loop that never ends
//!   (or nests `range(100000)` twice) would stall delivery for everyone.
//!   Each field's render may execute at most [`RENDER_FUEL`] minijinja
//!   instructions and produce at most [`MAX_RENDERED_BYTES`]; past either
//!   it fails with [`TemplateError::Render`] ("engine ran out of fuel" /
//!   "output is larger than …"), which fails that one delivery with its
//!   reason like any other render error.
//!
//! # Context
//!
//! A template sees `data` (the notify data or the event properties), `user`
//! (the profile traits: email, name, locale, timezone, …),
//! `notification` (`type`, `id`), `locale` and `timezone` (the user's,
//! for the [`locale`] and [`format`] filters: `plural`, `date`,
//! `datetime`, `time`, `number`, `money`). A digest template
//! ([`TemplateSet::render_digest`]) sees `items` (one value per summarised
//! notification, as the caller passes them), `count`, `group` (the value
//! of the type's `digest_key` field, `""` without one), `user` and
//! `notification` (`type` only); without a configured digest template a
//! built-in one ([`default_digest_template`]) is used.

use std::collections::BTreeMap;
use std::fmt;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};

use crate::channels::ChannelKind;

/// Instructions one field's render may execute. A digest of a few hundred
/// items costs tens of thousands; a million is a few milliseconds of CPU,
/// far beyond any real template and far short of a stalled worker.
pub const RENDER_FUEL: u64 = 1_000_000;

/// The largest rendered field, in bytes: above any real email body
/// (mail providers clip messages far smaller) and small enough that one
/// runaway template cannot fill memory or a mailbox.
pub const MAX_RENDERED_BYTES: usize = 1 << 20;

/// One notification's wording for one channel. Each field is a minijinja
/// source; an empty field renders to an empty string (e.g. SMS has no
/// subject, push has no HTML).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Template {
    /// Email subject.
    pub subject: String,
    /// Push / in-app title.
    pub title: String,
    /// Plain-text body (email text part, SMS, push body).
    pub text: String,
    /// HTML body (email HTML part); auto-escaped.
    pub html: String,
}

/// The four fields of a [`Template`], for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Subject,
    Title,
    Text,
    Html,
}

impl Field {
    pub const ALL: [Field; 4] = [Field::Subject, Field::Title, Field::Text, Field::Html];

    pub fn as_str(self) -> &'static str {
        match self {
            Field::Subject => "subject",
            Field::Title => "title",
            Field::Text => "text",
            Field::Html => "html",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Template {
    fn field(&self, field: Field) -> &str {
        match field {
            Field::Subject => &self.subject,
            Field::Title => &self.title,
            Field::Text => &self.text,
            Field::Html => &self.html,
        }
    }
}

/// What a template produced: the same four fields, rendered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendered {
    pub subject: String,
    pub title: String,
    pub text: String,
    pub html: String,
}

impl Rendered {
    fn set(&mut self, field: Field, value: String) {
        match field {
            Field::Subject => self.subject = value,
            Field::Title => self.title = value,
            Field::Text => self.text = value,
            Field::Html => self.html = value,
        }
    }
}

/// Every template of one notification type: the persisted form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TypeTemplates {
    /// Used for a channel that has no entry in `channels`.
    pub fallback: Option<Template>,
    pub channels: BTreeMap<ChannelKind, Template>,
    /// Digest wording; falls back like the above, then to the built-in
    /// [`default_digest_template`].
    pub digest_fallback: Option<Template>,
    pub digest_channels: BTreeMap<ChannelKind, Template>,
    /// The same per locale (BCP 47, e.g. `de`, `de-AT`, `pt-BR`), chosen
    /// by the user's `locale` trait before the ones above (see
    /// [`locale`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub locales: BTreeMap<String, LocaleTemplates>,
}

/// One locale's templates of a type: the fields of [`TypeTemplates`]
/// without `locales`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocaleTemplates {
    pub fallback: Option<Template>,
    pub channels: BTreeMap<ChannelKind, Template>,
    pub digest_fallback: Option<Template>,
    pub digest_channels: BTreeMap<ChannelKind, Template>,
}

/// The four tables of one locale's templates (or of the type's own),
/// borrowed: what choosing and compiling read, whichever struct holds
/// them.
#[derive(Clone, Copy)]
struct Tables<'a> {
    fallback: &'a Option<Template>,
    channels: &'a BTreeMap<ChannelKind, Template>,
    digest_fallback: &'a Option<Template>,
    digest_channels: &'a BTreeMap<ChannelKind, Template>,
}

impl<'a> Tables<'a> {
    /// The template for `channel` (a digest's when `digest`): the
    /// channel's own, else the fallback; with the slot channel it is
    /// stored under.
    fn pick(
        self,
        channel: ChannelKind,
        digest: bool,
    ) -> Option<(Option<ChannelKind>, &'a Template)> {
        let (channels, fallback) = if digest {
            (self.digest_channels, self.digest_fallback)
        } else {
            (self.channels, self.fallback)
        };
        channels
            .get(&channel)
            .map(|template| (Some(channel), template))
            .or(fallback.as_ref().map(|template| (None, template)))
    }

    /// Every template with its slot's channel and digest flag.
    fn slots(self) -> impl Iterator<Item = (Option<ChannelKind>, &'a Template, bool)> {
        let plain = self.fallback.iter().map(|t| (None, t, false));
        let channels = self.channels.iter().map(|(c, t)| (Some(*c), t, false));
        let digest = self.digest_fallback.iter().map(|t| (None, t, true));
        let digest_channels = self
            .digest_channels
            .iter()
            .map(|(c, t)| (Some(*c), t, true));
        plain.chain(channels).chain(digest).chain(digest_channels)
    }
}

impl LocaleTemplates {
    fn tables(&self) -> Tables<'_> {
        Tables {
            fallback: &self.fallback,
            channels: &self.channels,
            digest_fallback: &self.digest_fallback,
            digest_channels: &self.digest_channels,
        }
    }
}

impl TypeTemplates {
    /// The type's own tables (outside any locale).
    fn own(&self) -> Tables<'_> {
        Tables {
            fallback: &self.fallback,
            channels: &self.channels,
            digest_fallback: &self.digest_fallback,
            digest_channels: &self.digest_channels,
        }
    }

    /// The type's own tables (locale `None`), then each locale's.
    fn all_locales(&self) -> impl Iterator<Item = (Option<&str>, Tables<'_>)> {
        std::iter::once((None, self.own())).chain(
            self.locales
                .iter()
                .map(|(key, templates)| (Some(key.as_str()), templates.tables())),
        )
    }

    /// The template for `channel` and a user in `user_locale`: the first
    /// of the locale's fallback chain ([`locale::chain`]) that has one
    /// (the channel's own, else the locale's fallback), else the type's
    /// own; with the locale key and slot channel it is stored under.
    fn pick<'a>(
        &'a self,
        channel: ChannelKind,
        digest: bool,
        user_locale: Option<&str>,
    ) -> Option<(Option<&'a str>, Option<ChannelKind>, &'a Template)> {
        for wanted in user_locale.map(locale::chain).unwrap_or_default() {
            let found = self
                .locales
                .iter()
                .find(|(key, _)| locale::canonical(key).as_deref() == Some(wanted.as_str()));
            if let Some((key, templates)) = found
                && let Some((slot, template)) = templates.tables().pick(channel, digest)
            {
                return Some((Some(key.as_str()), slot, template));
            }
        }
        let (slot, template) = self.own().pick(channel, digest)?;
        Some((None, slot, template))
    }
}

/// The user's time zone as templates see it (`timezone`): their
/// `timezone` trait (the engine puts the preferences' zone there when the
/// user chose one), `UTC` without one.
fn time_zone_of(user: &serde_json::Value) -> String {
    user.get("timezone")
        .and_then(serde_json::Value::as_str)
        .filter(|zone| !zone.is_empty())
        .unwrap_or("UTC")
        .to_owned()
}

/// Everything the caller knows about one notification to render.
#[derive(Debug, Clone, Copy)]
pub struct RenderInput<'a> {
    pub notification_type: &'a str,
    pub notification_id: &'a str,
    /// Notify data or event properties (`data` in the template).
    pub data: &'a serde_json::Value,
    /// The user's profile traits (`user` in the template).
    pub user: &'a serde_json::Value,
}

/// Why a template could not be stored or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "invalid notification type {0:?}: use 1-128 characters from A-Z, a-z, 0-9, '_', '-', '.'"
    )]
    InvalidType(String),
    #[error("templates of type {notification_type:?}: locale {locale:?}: {detail}")]
    InvalidLocale {
        notification_type: String,
        locale: String,
        detail: String,
    },
    #[error("template {notification_type}/{channel}/{field}{}: syntax error: {detail}", line_suffix(*.line))]
    Syntax {
        notification_type: String,
        /// The channel, or `*` for the per-type fallback.
        channel: String,
        field: Field,
        line: Option<usize>,
        detail: String,
    },
    #[error("no template for notification type {notification_type:?} on channel {channel}")]
    NotFound {
        notification_type: String,
        channel: ChannelKind,
    },
    #[error("template {notification_type}/{channel}/{field}{} does not render: {detail}", line_suffix(*.line))]
    Render {
        notification_type: String,
        /// The channel, `*` for the fallback, or `digest` for the built-in
        /// digest template.
        channel: String,
        field: Field,
        line: Option<usize>,
        /// minijinja's message plus the failing expression, e.g.
        /// "undefined value (at `user.nickname`)".
        detail: String,
    },
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|line| format!(" line {line}")).unwrap_or_default()
}

/// Which stored template an environment entry belongs to.
#[derive(Clone, Copy)]
struct Slot<'a> {
    notification_type: &'a str,
    channel: Option<ChannelKind>,
    digest: bool,
    /// The locale key it is stored under; `None` for the type's own.
    locale: Option<&'a str>,
}

impl Slot<'_> {
    /// The channel (`*` for a fallback), `/digest` for a digest's, and
    /// `@<locale>` for a locale's: `email`, `*/digest`, `email@de-AT`.
    fn channel_label(&self) -> String {
        let channel = self.channel.map_or("*", ChannelKind::as_str);
        let mut label = if self.digest {
            format!("{channel}/digest")
        } else {
            channel.to_owned()
        };
        if let Some(locale) = self.locale {
            label.push('@');
            label.push_str(locale);
        }
        label
    }

    /// The environment's name for one field. Type names cannot hold `/`
    /// (see [`validate_type`]) and locale keys hold neither `/` nor `@`
    /// (see [`locale::canonical`]), so names are unique. The `.html`
    /// suffix is what switches auto-escaping on.
    fn name(&self, field: Field) -> String {
        format!(
            "{}/{}/{}",
            self.notification_type,
            self.channel_label(),
            field_file(field)
        )
    }
}

fn field_file(field: Field) -> &'static str {
    match field {
        Field::Html => "html.html",
        other => other.as_str(),
    }
}

/// The built-in digest wording, used when a type has no digest template.
pub fn default_digest_template() -> Template {
    // Each item shows its `title`, else its `subject`, else its JSON.
    const LINE: &str = "{% if item.title is defined %}{{ item.title }}\
        {% elif item.subject is defined %}{{ item.subject }}\
        {% else %}{{ item | tojson }}{% endif %}";
    const PLURAL: &str = "{{ 's' if count != 1 else '' }}";
    Template {
        subject: "{{ count }} new {{ notification.type }} notification{PLURAL}"
            .replace("{PLURAL}", PLURAL),
        title: "{{ count }} new notification{PLURAL}".replace("{PLURAL}", PLURAL),
        text: "You have {{ count }} new notification{PLURAL}:\n\
               {% for item in items %}- {LINE}\n{% endfor %}"
            .replace("{PLURAL}", PLURAL)
            .replace("{LINE}", LINE),
        html: "<p>You have {{ count }} new notification{PLURAL}:</p>\
               <ul>{% for item in items %}<li>{LINE}</li>{% endfor %}</ul>"
            .replace("{PLURAL}", PLURAL)
            .replace("{LINE}", LINE),
    }
}

const DEFAULT_DIGEST_TYPE: &str = "_default";

/// All templates, compiled. Cheap to clone (the compiled templates are
/// shared); serializes as its definitions (`BTreeMap<type, TypeTemplates>`)
/// and validates them again when deserialized.
#[derive(Clone)]
pub struct TemplateSet {
    definitions: BTreeMap<String, TypeTemplates>,
    env: Environment<'static>,
}

impl fmt::Debug for TemplateSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TemplateSet")
            .field("definitions", &self.definitions)
            .finish_non_exhaustive()
    }
}

impl Default for TemplateSet {
    fn default() -> Self {
        Self::new()
    }
}

impl Serialize for TemplateSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.definitions.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for TemplateSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let definitions = BTreeMap::<String, TypeTemplates>::deserialize(deserializer)?;
        Self::from_definitions(definitions).map_err(serde::de::Error::custom)
    }
}

impl TemplateSet {
    /// An empty set (digests still render with the built-in template).
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(RENDER_FUEL));
        env.add_filter("plural", locale::plural);
        env.add_filter("date", format::date);
        env.add_filter("datetime", format::datetime);
        env.add_filter("time", format::time);
        env.add_filter("number", format::number);
        env.add_filter("money", format::money);
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        let mut set = TemplateSet {
            definitions: BTreeMap::new(),
            env,
        };
        let slot = Slot {
            notification_type: DEFAULT_DIGEST_TYPE,
            channel: None,
            digest: true,
            locale: None,
        };
        set.compile(slot, &default_digest_template())
            .expect("the built-in digest template compiles");
        set
    }

    /// Builds a set from its persisted form, validating every template; the
    /// first error is returned.
    pub fn from_definitions(
        definitions: BTreeMap<String, TypeTemplates>,
    ) -> Result<Self, TemplateError> {
        let mut set = Self::new();
        for (notification_type, templates) in definitions {
            set.set_type(&notification_type, templates)?;
        }
        Ok(set)
    }

    /// The persisted form.
    pub fn definitions(&self) -> &BTreeMap<String, TypeTemplates> {
        &self.definitions
    }

    /// Checks that a template compiles without storing it.
    pub fn validate(
        notification_type: &str,
        channel: Option<ChannelKind>,
        template: &Template,
    ) -> Result<(), TemplateError> {
        validate_type(notification_type)?;
        let mut scratch = Self::new();
        let slot = Slot {
            notification_type,
            channel,
            digest: false,
            locale: None,
        };
        scratch.compile(slot, template)
    }

    /// Replaces every template of one type at once (validated first; on
    /// error nothing changes).
    pub fn set_type(
        &mut self,
        notification_type: &str,
        templates: TypeTemplates,
    ) -> Result<(), TemplateError> {
        validate_type(notification_type)?;
        locale::check_keys(notification_type, templates.locales.keys())?;
        let mut staged = self.clone();
        staged.remove_type(notification_type);
        for (locale, set) in templates.all_locales() {
            for (channel, template, digest) in set.slots() {
                let slot = Slot {
                    notification_type,
                    channel,
                    digest,
                    locale,
                };
                staged.compile(slot, template)?;
            }
        }
        staged
            .definitions
            .insert(notification_type.to_owned(), templates);
        *self = staged;
        Ok(())
    }

    /// Stores one template; `channel: None` is the per-type fallback.
    pub fn set(
        &mut self,
        notification_type: &str,
        channel: Option<ChannelKind>,
        template: Template,
    ) -> Result<(), TemplateError> {
        self.set_slot(notification_type, channel, false, template)
    }

    /// Stores one digest template; `channel: None` is the per-type fallback.
    pub fn set_digest(
        &mut self,
        notification_type: &str,
        channel: Option<ChannelKind>,
        template: Template,
    ) -> Result<(), TemplateError> {
        self.set_slot(notification_type, channel, true, template)
    }

    fn set_slot(
        &mut self,
        notification_type: &str,
        channel: Option<ChannelKind>,
        digest: bool,
        template: Template,
    ) -> Result<(), TemplateError> {
        let mut templates = self
            .definitions
            .get(notification_type)
            .cloned()
            .unwrap_or_default();
        match (digest, channel) {
            (false, None) => templates.fallback = Some(template),
            (false, Some(channel)) => {
                templates.channels.insert(channel, template);
            }
            (true, None) => templates.digest_fallback = Some(template),
            (true, Some(channel)) => {
                templates.digest_channels.insert(channel, template);
            }
        }
        self.set_type(notification_type, templates)
    }

    /// Removes every template of one type; returns whether it had any.
    pub fn remove_type(&mut self, notification_type: &str) -> bool {
        let Some(templates) = self.definitions.remove(notification_type) else {
            return false;
        };
        for (locale, set) in templates.all_locales() {
            for (channel, _, digest) in set.slots() {
                let slot = Slot {
                    notification_type,
                    channel,
                    digest,
                    locale,
                };
                for field in Field::ALL {
                    self.env.remove_template(&slot.name(field));
                }
            }
        }
        true
    }

    /// The template used for `(type, channel)`: the channel's own, else the
    /// type's fallback.
    pub fn get(&self, notification_type: &str, channel: ChannelKind) -> Option<&Template> {
        let templates = self.definitions.get(notification_type)?;
        templates
            .channels
            .get(&channel)
            .or(templates.fallback.as_ref())
    }

    /// Renders one notification for one channel.
    pub fn render(
        &self,
        channel: ChannelKind,
        input: RenderInput<'_>,
    ) -> Result<Rendered, TemplateError> {
        let not_found = || TemplateError::NotFound {
            notification_type: input.notification_type.to_owned(),
            channel,
        };
        let templates = self
            .definitions
            .get(input.notification_type)
            .ok_or_else(not_found)?;
        let user_locale = locale::of_user(input.user);
        let (locale, slot_channel, template) = templates
            .pick(channel, false, user_locale.as_deref())
            .ok_or_else(not_found)?;
        let slot = Slot {
            notification_type: input.notification_type,
            channel: slot_channel,
            digest: false,
            locale,
        };
        let context = minijinja::context! {
            data => minijinja::Value::from_serialize(input.data),
            user => minijinja::Value::from_serialize(input.user),
            notification => minijinja::context! {
                type => input.notification_type,
                id => input.notification_id,
            },
            locale => user_locale.unwrap_or_else(|| locale::DEFAULT.to_owned()),
            timezone => time_zone_of(input.user),
        };
        self.render_slot(slot, template, &context)
    }

    /// Renders one digest message summarising `items` (e.g. the data of each
    /// held notification). Falls back from the channel's digest template to
    /// the type's digest fallback to [`default_digest_template`].
    pub fn render_digest(
        &self,
        notification_type: &str,
        channel: ChannelKind,
        items: &[serde_json::Value],
        group: &str,
        user: &serde_json::Value,
    ) -> Result<Rendered, TemplateError> {
        let user_locale = locale::of_user(user);
        let own = self
            .definitions
            .get(notification_type)
            .and_then(|t| t.pick(channel, true, user_locale.as_deref()));
        let builtin = default_digest_template();
        let (slot, template) = match own {
            Some((locale, slot_channel, template)) => (
                Slot {
                    notification_type,
                    channel: slot_channel,
                    digest: true,
                    locale,
                },
                template,
            ),
            None => (
                Slot {
                    notification_type: DEFAULT_DIGEST_TYPE,
                    channel: None,
                    digest: true,
                    locale: None,
                },
                &builtin,
            ),
        };
        let context = minijinja::context! {
            items => minijinja::Value::from_serialize(items),
            count => items.len(),
            group => group,
            user => minijinja::Value::from_serialize(user),
            locale => user_locale.clone().unwrap_or_else(|| locale::DEFAULT.to_owned()),
            timezone => time_zone_of(user),
            notification => minijinja::context! { type => notification_type },
        };
        self.render_slot(slot, template, &context)
            .map_err(|error| match error {
                // Name the real type, not the built-in's placeholder.
                TemplateError::Render {
                    channel,
                    field,
                    line,
                    detail,
                    ..
                } => TemplateError::Render {
                    notification_type: notification_type.to_owned(),
                    channel,
                    field,
                    line,
                    detail,
                },
                other => other,
            })
    }

    fn compile(&mut self, slot: Slot<'_>, template: &Template) -> Result<(), TemplateError> {
        for field in Field::ALL {
            let source = template.field(field);
            let name = slot.name(field);
            if source.is_empty() {
                self.env.remove_template(&name);
                continue;
            }
            self.env
                .add_template_owned(name, source.to_owned())
                .map_err(|error| TemplateError::Syntax {
                    notification_type: slot.notification_type.to_owned(),
                    channel: slot.channel_label(),
                    field,
                    line: error.line(),
                    detail: error.detail().unwrap_or("invalid template").to_owned(),
                })?;
        }
        Ok(())
    }

    fn render_slot(
        &self,
        slot: Slot<'_>,
        template: &Template,
        context: &minijinja::Value,
    ) -> Result<Rendered, TemplateError> {
        let mut rendered = Rendered::default();
        for field in Field::ALL {
            let source = template.field(field);
            if source.is_empty() {
                continue;
            }
            let render_error = |error: minijinja::Error| {
                let mut detail = error.kind().to_string();
                if let Some(more) = error.detail() {
                    detail.push_str(": ");
                    detail.push_str(more);
                }
                let snippet = error
                    .range()
                    .and_then(|range| source.get(range))
                    .filter(|snippet| !snippet.is_empty());
                if let Some(snippet) = snippet {
                    detail.push_str(&format!(" (at `{snippet}`)"));
                }
                TemplateError::Render {
                    notification_type: slot.notification_type.to_owned(),
                    channel: slot.channel_label(),
                    field,
                    line: error.line(),
                    detail,
                }
            };
            let compiled = self
                .env
                .get_template(&slot.name(field))
                .map_err(render_error)?;
            let value = compiled.render(context).map_err(render_error)?;
            if value.len() > MAX_RENDERED_BYTES {
                return Err(TemplateError::Render {
                    notification_type: slot.notification_type.to_owned(),
                    channel: slot.channel_label(),
                    field,
                    line: None,
                    detail: format!(
                        "output is larger than {MAX_RENDERED_BYTES} bytes ({} bytes)",
                        value.len()
                    ),
                });
            }
            rendered.set(field, value);
        }
        Ok(rendered)
    }
}

/// Type names become part of template names and metric-free identifiers,
/// so they are kept to a safe alphabet.
fn validate_type(notification_type: &str) -> Result<(), TemplateError> {
    let ok = !notification_type.is_empty()
        && notification_type.len() <= 128
        && notification_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(TemplateError::InvalidType(notification_type.to_owned()))
    }
}

#[cfg(test)]
mod proptests;

pub mod format;
pub mod locale;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn input<'a>(data: &'a serde_json::Value, user: &'a serde_json::Value) -> RenderInput<'a> {
        RenderInput {
            notification_type: "payment_failed",
            notification_id: "n-1",
            data,
            user,
        }
    }

    fn email_template() -> Template {
        Template {
            subject: "Payment of {{ data.amount }} failed".into(),
            title: String::new(),
            text: "Hi {{ user.name }}, card {{ data.card }} was declined ({{ notification.id }})."
                .into(),
            html: "<p>Hi {{ user.name }}</p>".into(),
        }
    }

    #[test]
    fn renders_data_traits_and_notification() {
        let mut set = TemplateSet::new();
        set.set("payment_failed", Some(ChannelKind::Email), email_template())
            .unwrap();
        let data = json!({"amount": "€12.00", "card": "4242"});
        let user = json!({"name": "Ada", "email": "ada@example.com"});
        let rendered = set.render(ChannelKind::Email, input(&data, &user)).unwrap();
        assert_eq!(rendered.subject, "Payment of €12.00 failed");
        assert_eq!(rendered.title, "");
        assert_eq!(rendered.text, "Hi Ada, card 4242 was declined (n-1).");
        assert_eq!(rendered.html, "<p>Hi Ada</p>");
    }

    #[test]
    fn a_runaway_template_fails_its_render_and_the_next_one_still_works() {
        let mut set = TemplateSet::new();
        let endless = Template {
            text:
                "{% for a in range(100000) %}{% for b in range(100000) %}.{% endfor %}{% endfor %}"
                    .into(),
            ..Template::default()
        };
        set.set("loops", Some(ChannelKind::Sms), endless).unwrap();
        let huge = Template {
            text: "{{ 'x' * 3000000 }}".into(),
            ..Template::default()
        };
        set.set("huge", Some(ChannelKind::Sms), huge).unwrap();
        set.set("payment_failed", Some(ChannelKind::Email), email_template())
            .unwrap();
        let data = json!({"amount": "€1", "card": "1"});
        let user = json!({"name": "Ada"});

        let loops = RenderInput {
            notification_type: "loops",
            ..input(&data, &user)
        };
        let Err(TemplateError::Render { field, detail, .. }) = set.render(ChannelKind::Sms, loops)
        else {
            panic!("a loop of 10^10 steps must run out of fuel");
        };
        assert_eq!(field, Field::Text);
        assert!(detail.contains("out of fuel"), "{detail}");

        let huge = RenderInput {
            notification_type: "huge",
            ..input(&data, &user)
        };
        let Err(TemplateError::Render { detail, .. }) = set.render(ChannelKind::Sms, huge) else {
            panic!("a 3 MB field must be refused");
        };
        assert!(detail.contains("larger than 1048576 bytes"), "{detail}");

        // Fuel is per render: the set keeps working for everyone else.
        let rendered = set.render(ChannelKind::Email, input(&data, &user)).unwrap();
        assert_eq!(rendered.subject, "Payment of €1 failed");
    }

    #[test]
    fn channel_falls_back_to_type_template() {
        let mut set = TemplateSet::new();
        let fallback = Template {
            title: "Fallback {{ notification.type }}".into(),
            ..Template::default()
        };
        set.set("payment_failed", None, fallback).unwrap();
        set.set("payment_failed", Some(ChannelKind::Email), email_template())
            .unwrap();
        let data = json!({});
        let user = json!({});
        let rendered = set.render(ChannelKind::Sms, input(&data, &user)).unwrap();
        assert_eq!(rendered.title, "Fallback payment_failed");
        let other = RenderInput {
            notification_type: "unknown",
            ..input(&data, &user)
        };
        assert!(matches!(
            set.render(ChannelKind::Sms, other),
            Err(TemplateError::NotFound { .. })
        ));
    }

    #[test]
    fn missing_variable_is_an_error_naming_the_field() {
        let mut set = TemplateSet::new();
        set.set("payment_failed", Some(ChannelKind::Email), email_template())
            .unwrap();
        let data = json!({"amount": 12, "card": "4242"});
        let user = json!({"email": "ada@example.com"});
        let error = set
            .render(ChannelKind::Email, input(&data, &user))
            .unwrap_err();
        let TemplateError::Render {
            channel,
            field,
            line,
            ..
        } = &error
        else {
            panic!("unexpected {error:?}");
        };
        assert_eq!(
            (channel.as_str(), *field, *line),
            ("email", Field::Text, Some(1))
        );
        let message = error.to_string();
        assert!(
            message.contains("payment_failed/email/text line 1"),
            "{message}"
        );
        assert!(message.contains("user.name"), "{message}");
    }

    #[test]
    fn syntax_error_is_rejected_at_validation() {
        let mut set = TemplateSet::new();
        let broken = Template {
            subject: "ok".into(),
            text: "line one\n{% if data.x %}never closed".into(),
            ..Template::default()
        };
        let error = set
            .set("payment_failed", Some(ChannelKind::Sms), broken.clone())
            .unwrap_err();
        let TemplateError::Syntax {
            channel,
            field,
            line,
            ..
        } = &error
        else {
            panic!("unexpected {error:?}");
        };
        assert_eq!((channel.as_str(), *field), ("sms", Field::Text));
        assert!(line.is_some(), "{error}");
        assert!(
            error.to_string().contains("payment_failed/sms/text"),
            "{error}"
        );
        // Nothing was stored.
        assert!(set.get("payment_failed", ChannelKind::Sms).is_none());
        assert!(TemplateSet::validate("payment_failed", None, &broken).is_err());

        // Deserializing a stored set validates too.
        let stored = json!({"payment_failed": {"channels": {"sms": broken}}});
        assert!(serde_json::from_value::<TemplateSet>(stored).is_err());
    }

    #[test]
    fn html_escapes_only_the_html_field() {
        let mut set = TemplateSet::new();
        let template = Template {
            subject: "{{ data.name }}".into(),
            text: "{{ data.name }}".into(),
            html: "<b>{{ data.name }}</b>{{ data.trusted | safe }}".into(),
            ..Template::default()
        };
        set.set("payment_failed", None, template).unwrap();
        let data = json!({"name": "<script>&", "trusted": "<i>ok</i>"});
        let user = json!({});
        let rendered = set.render(ChannelKind::Email, input(&data, &user)).unwrap();
        assert_eq!(rendered.subject, "<script>&");
        assert_eq!(rendered.text, "<script>&");
        assert_eq!(rendered.html, "<b>&lt;script&gt;&amp;</b><i>ok</i>");
    }

    #[test]
    fn digest_of_n_items_with_builtin_and_custom_templates() {
        let mut set = TemplateSet::new();
        let items: Vec<_> = (1..=3)
            .map(|n| json!({"title": format!("Comment {n}")}))
            .collect();
        let user = json!({"name": "Ada"});
        let rendered = set
            .render_digest("comment", ChannelKind::Email, &items, "", &user)
            .unwrap();
        assert_eq!(rendered.subject, "3 new comment notifications");
        assert_eq!(
            rendered.text,
            "You have 3 new notifications:\n- Comment 1\n- Comment 2\n- Comment 3\n"
        );
        assert!(
            rendered.html.contains("<li>Comment 2</li>"),
            "{}",
            rendered.html
        );

        let custom = Template {
            subject: "{{ user.name }}: {{ count }} comments".into(),
            text: "{% for item in items %}{{ loop.index }}. {{ item.title }}\n{% endfor %}".into(),
            ..Template::default()
        };
        set.set_digest("comment", None, custom).unwrap();
        let rendered = set
            .render_digest("comment", ChannelKind::Email, &items[..2], "", &user)
            .unwrap();
        assert_eq!(rendered.subject, "Ada: 2 comments");
        assert_eq!(rendered.text, "1. Comment 1\n2. Comment 2\n");
        assert_eq!(rendered.html, "");
    }

    #[test]
    fn a_users_locale_picks_the_template_down_its_fallback_chain() {
        let plain = |title: &str| Template {
            title: title.into(),
            ..Template::default()
        };
        let mut set = TemplateSet::new();
        let german = LocaleTemplates {
            fallback: Some(plain(
                "{{ data.n | plural(one=\"# neuer Kommentar\", other=\"# neue Kommentare\") }}",
            )),
            digest_fallback: Some(plain("{{ count }} Neuigkeiten")),
            ..LocaleTemplates::default()
        };
        let austrian = LocaleTemplates {
            channels: [(Email, plain("Servus, {{ locale }}"))].into(),
            ..LocaleTemplates::default()
        };
        let polish = LocaleTemplates {
            fallback: Some(plain(
                "{{ data.n | plural(one=\"# komentarz\", few=\"# komentarze\", many=\"# komentarzy\", other=\"# komentarza\") }}",
            )),
            ..LocaleTemplates::default()
        };
        let templates = TypeTemplates {
            fallback: Some(plain(
                "{{ data.n | plural(one=\"# new comment\", other=\"# new comments\") }}",
            )),
            channels: [(Email, plain("Email for {{ locale }}"))].into(),
            locales: [
                ("de".to_owned(), german),
                ("de-AT".to_owned(), austrian),
                ("pl".to_owned(), polish),
            ]
            .into(),
            ..TypeTemplates::default()
        };
        set.set_type("comment", templates).unwrap();
        let title = |channel, locale: Option<&str>, n: i64| {
            let user = match locale {
                Some(locale) => json!({ "locale": locale }),
                None => json!({}),
            };
            let data = json!({ "n": n });
            let input = RenderInput {
                notification_type: "comment",
                ..input(&data, &user)
            };
            set.render(channel, input).unwrap().title
        };
        use ChannelKind::{Email, InApp};
        assert_eq!(
            title(InApp, Some("de-AT"), 1),
            "1 neuer Kommentar",
            "de-AT → de"
        );
        assert_eq!(title(InApp, Some("de_CH.UTF-8"), 3), "3 neue Kommentare");
        assert_eq!(
            title(Email, Some("de-at"), 1),
            "Servus, de-at",
            "the channel's own in de-AT"
        );
        assert_eq!(
            title(Email, Some("de"), 1),
            "1 neuer Kommentar",
            "de's fallback before the type's email"
        );
        assert_eq!(title(InApp, Some("pl"), 1), "1 komentarz");
        assert_eq!(title(InApp, Some("pl"), 3), "3 komentarze");
        assert_eq!(title(InApp, Some("pl"), 5), "5 komentarzy");
        assert_eq!(
            title(InApp, Some("fr"), 1),
            "1 new comment",
            "no French: the type's own"
        );
        assert_eq!(title(InApp, None, 2), "2 new comments");
        assert_eq!(title(Email, Some("not a tag"), 2), "Email for en");
        let digest = set
            .render_digest(
                "comment",
                InApp,
                &[json!({}), json!({})],
                "",
                &json!({"locale": "de-AT"}),
            )
            .unwrap();
        assert_eq!(digest.title, "2 Neuigkeiten");

        // `other` is required; an unknown category is an error naming it.
        let mut strict = TemplateSet::new();
        for (source, wanted) in [
            ("{{ 1 | plural(one=\"x\") }}", "other"),
            ("{{ 1 | plural(other=\"x\", single=\"y\") }}", "single"),
            ("{{ \"many\" | plural(other=\"x\") }}", "number"),
        ] {
            strict.set("t", None, plain(source)).unwrap();
            let error = strict
                .render(
                    InApp,
                    RenderInput {
                        notification_type: "t",
                        ..input(&json!({}), &json!({}))
                    },
                )
                .unwrap_err();
            assert!(error.to_string().contains(wanted), "{source}: {error}");
        }
    }

    #[test]
    fn locale_keys_must_be_language_tags_once() {
        let mut set = TemplateSet::new();
        for keys in [vec!["german"], vec!["de_AT"], vec!["de", "DE"], vec!["x/y"]] {
            let templates = TypeTemplates {
                locales: keys
                    .iter()
                    .map(|key| ((*key).to_owned(), LocaleTemplates::default()))
                    .collect(),
                ..TypeTemplates::default()
            };
            let error = set.set_type("comment", templates).unwrap_err();
            assert!(
                matches!(error, TemplateError::InvalidLocale { .. }),
                "{keys:?}: {error}"
            );
        }
        assert!(set.definitions().is_empty(), "nothing stored");
    }

    #[test]
    fn serde_round_trip_keeps_templates() {
        let mut set = TemplateSet::new();
        set.set("payment_failed", Some(ChannelKind::Email), email_template())
            .unwrap();
        let json = serde_json::to_string(&set).unwrap();
        let back: TemplateSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back.definitions(), set.definitions());
        assert!(back.get("payment_failed", ChannelKind::Email).is_some());
    }

    #[test]
    fn remove_and_invalid_type() {
        let mut set = TemplateSet::new();
        set.set("payment_failed", None, email_template()).unwrap();
        assert!(set.remove_type("payment_failed"));
        assert!(set.get("payment_failed", ChannelKind::Email).is_none());
        assert!(matches!(
            set.set("a/b", None, email_template()),
            Err(TemplateError::InvalidType(_))
        ));
    }
}
