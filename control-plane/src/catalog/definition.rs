//! [`TypeDefinition`]: one notification type as an operator defines it, in
//! the config file (`[types.<name>]`) or through the management API, and
//! the one check both sources go through ([`TypeDefinition::check`]).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::channels::ChannelKind;
use crate::preferences::{Frequency, TypeDefaults};
use crate::templates::{Template, TemplateSet, TypeTemplates};
use crate::throttle::Throttle;
use crate::workflow::Step;

/// The fields of [`TypeDefaults`] plus where the type's webhooks go and its
/// templates. Not `TypeDefaults` flattened: serde cannot combine `flatten`
/// with `deny_unknown_fields`. The API's definitions are stored as this
/// struct's JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TypeDefinition {
    pub channels: BTreeSet<ChannelKind>,
    pub critical: bool,
    pub frequency: Frequency,
    pub category: Option<String>,
    pub webhook_url: Option<String>,
    pub templates: TypeTemplates,
    /// At most so many of this type (or its category) per user and
    /// window; see [`crate::throttle`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttle: Option<Throttle>,
    /// A field of the notification's data (`project_id`, or a dotted path
    /// like `project.id`) whose value splits the type's digests: one
    /// digest per value. See [`crate::digest::group_of`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest_key: Option<String>,
    /// A workflow instead of a flat channel list (see [`crate::workflow`]):
    /// its channel steps are the type's channels.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
}

/// Why a definition cannot be used: the field (relative to the type, empty
/// for its name) and what is wrong, for the caller to prefix with where the
/// type was written (`types.<name>.` in the file, `type.` in the API).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct DefinitionError {
    pub field: std::borrow::Cow<'static, str>,
    pub message: String,
}

impl TypeDefinition {
    /// The channels it goes out on: its `channels`, or its steps'.
    pub fn channel_set(&self) -> BTreeSet<ChannelKind> {
        if self.steps.is_empty() {
            self.channels.clone()
        } else {
            crate::workflow::channels(&self.steps)
        }
    }

    /// The operator's defaults this type sets.
    pub fn defaults(&self) -> TypeDefaults {
        TypeDefaults {
            channels: self.channel_set(),
            critical: self.critical,
            frequency: self.frequency,
            category: self.category.clone(),
        }
    }

    /// Checks the definition of type `name` against the channels that have
    /// a sender (`enabled`): the name's alphabet, every channel enabled, the
    /// webhook URL, and that every template compiles.
    pub fn check(
        &self,
        name: &str,
        enabled: &BTreeSet<ChannelKind>,
    ) -> Result<(), DefinitionError> {
        let error = |field: &'static str, message| {
            Err(DefinitionError {
                field: field.into(),
                message,
            })
        };
        // Type names end up in template names: the same alphabet rule
        // applies to types that have no templates.
        if let Err(err) = TemplateSet::validate(name, None, &Template::default()) {
            return error("", err.to_string());
        }
        if !self.steps.is_empty() {
            if !self.channels.is_empty() {
                return error(
                    "channels",
                    "a type with steps sends on its steps' channels; leave channels out".to_owned(),
                );
            }
            if let Err(crate::workflow::StepsError { field, message }) =
                crate::workflow::check(&self.steps)
            {
                return Err(DefinitionError {
                    field: field.into(),
                    message,
                });
            }
        }
        let channels_field = if self.steps.is_empty() {
            "channels"
        } else {
            "steps"
        };
        if let Some(channel) = self.channel_set().iter().find(|c| !enabled.contains(c)) {
            return error(
                channels_field,
                format!(
                    "type {name:?} goes out on {channel}, but [channels.{channel}] is not configured"
                ),
            );
        }
        if let Some(url) = &self.webhook_url {
            if let Err(message) = check_http_url(url) {
                return error("webhook_url", message);
            }
            if !enabled.contains(&ChannelKind::Webhook) {
                return error(
                    "webhook_url",
                    "is set, but [channels.webhook] is not configured".to_owned(),
                );
            }
        }
        if let Some(path) = &self.digest_key
            && let Err(message) = check_digest_key(path)
        {
            return error("digest_key", message);
        }
        if let Some(throttle) = &self.throttle
            && let Err((field, message)) = throttle.check(self.category.as_deref())
        {
            return error(field, message);
        }
        if self.templates != TypeTemplates::default() {
            let mut scratch = TemplateSet::new();
            if let Err(err) = scratch.set_type(name, self.templates.clone()) {
                return error("templates", err.to_string());
            }
        }
        Ok(())
    }
}

/// A digest key: 1 to 8 dot-separated field names of 1 to 64 characters,
/// without whitespace or control characters.
fn check_digest_key(path: &str) -> Result<(), String> {
    let fields: Vec<&str> = path.split('.').collect();
    if fields.len() > 8
        || fields.iter().any(|field| {
            field.is_empty()
                || field.chars().count() > 64
                || field.chars().any(|c| c.is_whitespace() || c.is_control())
        })
    {
        return Err(format!(
            "{path:?} is not a field name or dotted path (1 to 8 names of 1 to 64 characters, no spaces)"
        ));
    }
    Ok(())
}

/// An absolute `http` or `https` URL with a host.
pub fn check_http_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|err| format!("{url:?} is not a URL: {err}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("{url:?} is not an http(s) URL"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_app() -> BTreeSet<ChannelKind> {
        BTreeSet::from([ChannelKind::InApp])
    }

    #[test]
    fn names_the_field_at_fault() {
        let bad_name = TypeDefinition::default().check("a/b", &in_app());
        assert_eq!(bad_name.unwrap_err().field, "");
        let email = TypeDefinition {
            channels: BTreeSet::from([ChannelKind::Email]),
            ..TypeDefinition::default()
        };
        let err = email.check("t", &in_app()).unwrap_err();
        assert_eq!(err.field, "channels");
        assert!(err.message.contains("[channels.email]"), "{err}");
        let hook = TypeDefinition {
            webhook_url: Some("ftp://x".to_owned()),
            ..TypeDefinition::default()
        };
        assert_eq!(hook.check("t", &in_app()).unwrap_err().field, "webhook_url");
        for path in ["", "a..b", "project id", ".a", &"x.".repeat(9)] {
            let keyed = TypeDefinition {
                digest_key: Some(path.to_owned()),
                ..TypeDefinition::default()
            };
            assert_eq!(
                keyed.check("t", &in_app()).unwrap_err().field,
                "digest_key",
                "{path:?}"
            );
        }
        let keyed = TypeDefinition {
            digest_key: Some("project.id".to_owned()),
            ..TypeDefinition::default()
        };
        assert!(keyed.check("t", &in_app()).is_ok());
        let mut broken = TypeDefinition::default();
        broken.templates.fallback = Some(Template {
            title: "{{ oops".to_owned(),
            ..Template::default()
        });
        let err = broken.check("t", &in_app()).unwrap_err();
        assert_eq!(err.field, "templates");
        assert!(err.message.contains("template t/*/title"), "{err}");
    }

    #[test]
    fn a_valid_definition_passes() {
        let mut definition = TypeDefinition {
            channels: in_app(),
            critical: true,
            ..TypeDefinition::default()
        };
        definition.templates.channels.insert(
            ChannelKind::InApp,
            Template {
                title: "Hi {{ user.name }}".to_owned(),
                ..Template::default()
            },
        );
        definition.check("welcome", &in_app()).unwrap();
        assert!(definition.defaults().critical);
    }
}
