//! The notification engine's config file (`NUDGE_CP_CONFIG`, TOML): provider
//! credentials, retry policy, per-channel concurrency, and the operator's
//! notification types with their defaults and templates.
//!
//! It promises that an [`EngineConfig`] is valid as a whole: [`EngineConfig::load`]
//! refuses unknown keys (every table is `deny_unknown_fields`), compiles every
//! template, runs the channels' own constructor checks, and refuses a type
//! that goes out on a channel with no `[channels.…]` section. Errors name the
//! file, the key (or table) and the line, so an operator can fix the file
//! without reading code. No file means [`EngineConfig::default`]: the in-app
//! channel only, no types configured.
//!
//! Types are checked by [`TypeDefinition::check`], the same check the
//! management API's definitions go through; the file's types and rules are
//! read-only through that API (see [`crate::catalog`]).
//!
//! The commented example of every key is `control-plane/nudge.example.toml`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::rules::{Rule, validate_rules};

use crate::analytics::AnalyticsConfig;
use crate::catalog::{TypeDefinition, check_http_url};
use crate::channels::ChannelKind;
use crate::channels::apns::{ApnsChannel, ApnsConfig};
use crate::channels::email::{EmailChannel, EmailConfig, humantime_duration};
use crate::channels::fcm::{FcmChannel, FcmConfig};
use crate::channels::sms::{SmsChannel, SmsConfig};
use crate::channels::web_push::{WebPushChannel, WebPushConfig};
use crate::channels::webhook::{WebhookChannel, WebhookConfig};
use crate::config::ConfigError;
use crate::delivery::{DispatcherConfig, RetryPolicy};
use crate::devices::cleanup::DeviceRetention;
use crate::links::{TrackingLinks, UnsubscribeLinks};
use crate::preferences::OperatorDefaults;
use crate::privacy::RetentionConfig;
use crate::templates::{TemplateSet, TypeTemplates};

/// Why the engine's config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum EngineConfigError {
    #[error("cannot read {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    /// Not TOML, or TOML that does not fit the schema (unknown key, wrong
    /// type, bad duration).
    #[error("{file}: {message}{}", location(.table, *.line))]
    Parse {
        file: String,
        /// toml's message, e.g. "unknown field `hots`, expected one of …".
        message: String,
        /// The `[table]` the error is in (empty at the top level).
        table: String,
        /// 1-based; absent when toml reported no position.
        line: Option<usize>,
    },
    /// Well-formed, but not usable: a template that does not compile, a
    /// channel that is not configured, a value out of range.
    #[error("{file}: invalid {key}: {message}")]
    Invalid {
        file: String,
        /// Dotted key path, e.g. `types.payment_failed.channels`.
        key: String,
        message: String,
    },
}

fn location(table: &str, line: Option<usize>) -> String {
    let mut text = String::new();
    if !table.is_empty() {
        text.push_str(" in ");
        text.push_str(table);
    }
    if let Some(line) = line {
        text.push_str(&format!(" at line {line}"));
    }
    text
}

/// The file as written; [`EngineConfig`] is this after validation.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct EngineFile {
    public_url: Option<String>,
    /// Signs the links under `public_url` (see [`crate::links`]).
    link_secret: Option<String>,
    /// `[tracking]`: open and click tracking in emails.
    tracking: TrackingConfig,
    retry: RetryConfig,
    concurrency: BTreeMap<ChannelKind, usize>,
    channels: ChannelsConfig,
    /// `[types.<name>]`: see [`TypeDefinition`].
    types: BTreeMap<String, TypeDefinition>,
    /// `[[rules]]`: events that trigger notifications.
    rules: Vec<Rule>,
    /// `[[subscriptions]]`: events that put users on topics (or off).
    subscriptions: Vec<crate::broadcasts::rules::SubscriptionRule>,
    /// `[devices]`: when unused devices are retired.
    devices: DeviceRetention,
    /// `[retention]`: how long events, notifications and attempt logs are
    /// kept.
    retention: RetentionConfig,
    /// `[analytics]`: sessions, attribution, costs, funnels.
    analytics: AnalyticsConfig,
}

/// `[tracking]`: engagement tracking in emails (see
/// [`crate::links::tracking`]). Each switch defaults to on when
/// `public_url` is set (tracking needs it) and can be turned off; turning
/// one on without `public_url` is refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TrackingConfig {
    /// The open pixel in HTML emails.
    opens: Option<bool>,
    /// Click-tracking redirects for the links in HTML emails.
    clicks: Option<bool>,
}

/// `[retry]`: the delivery retry schedule (see [`RetryPolicy`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Upper bound of the first retry's wait, e.g. `"5s"`.
    #[serde(with = "humantime_duration")]
    pub initial: Duration,
    /// Cap on the doubling wait, e.g. `"1h"`.
    #[serde(with = "humantime_duration")]
    pub max: Duration,
    /// Attempts (the first included) before a delivery is dead-lettered.
    pub max_attempts: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        let policy = RetryPolicy::default();
        RetryConfig {
            initial: policy.initial,
            max: policy.max,
            max_attempts: policy.max_attempts,
        }
    }
}

/// `[channels]`: a present section enables the channel.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ChannelsConfig {
    email: Option<EmailConfig>,
    webhook: Option<WebhookConfig>,
    sms: Option<SmsConfig>,
    apns: Option<ApnsConfig>,
    fcm: Option<FcmConfig>,
    web_push: Option<WebPushConfig>,
}

impl ChannelsConfig {
    /// In-app (always) plus every channel with a `[channels.…]` section.
    fn enabled(&self) -> BTreeSet<ChannelKind> {
        let mut enabled = BTreeSet::from([ChannelKind::InApp]);
        let configured = [
            (self.email.is_some(), ChannelKind::Email),
            (self.webhook.is_some(), ChannelKind::Webhook),
            (self.sms.is_some(), ChannelKind::Sms),
            (self.apns.is_some(), ChannelKind::Apns),
            (self.fcm.is_some(), ChannelKind::Fcm),
            (self.web_push.is_some(), ChannelKind::WebPush),
        ];
        enabled.extend(
            configured
                .into_iter()
                .filter(|(on, _)| *on)
                .map(|(_, kind)| kind),
        );
        enabled
    }
}

/// The notification engine's settings, validated.
///
/// Plain settings the engine passes on are public fields; everything derived
/// (defaults, templates, policies) comes from methods.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// Base URL of the control plane as users reach it, for unsubscribe and
    /// click links; without it emails carry no unsubscribe headers.
    pub public_url: Option<String>,
    /// `public_url` with `link_secret`: makes and checks unsubscribe links.
    unsubscribe_links: Option<UnsubscribeLinks>,
    /// `public_url` with `link_secret` and the `[tracking]` switches:
    /// makes and checks open and click links.
    tracking_links: Option<TrackingLinks>,
    /// The SMTP relay; `None` means the email channel is off.
    pub email: Option<EmailConfig>,
    /// The webhook signer; `None` means the webhook channel is off.
    pub webhook: Option<WebhookConfig>,
    /// The Twilio-compatible SMS provider; `None` means SMS is off.
    pub sms: Option<SmsConfig>,
    /// Apple push (token auth); `None` means APNs is off.
    pub apns: Option<ApnsConfig>,
    /// Firebase Cloud Messaging (HTTP v1); `None` means FCM is off.
    pub fcm: Option<FcmConfig>,
    /// Web Push (VAPID); `None` means Web Push is off.
    pub web_push: Option<WebPushConfig>,
    /// The channels the file configures, computed once at load.
    enabled: BTreeSet<ChannelKind>,
    retry: RetryConfig,
    concurrency: BTreeMap<ChannelKind, usize>,
    types: BTreeMap<String, TypeDefinition>,
    /// Compiled once at load, so a bad template stops start-up.
    templates: TemplateSet,
    /// Validated rules (unique names, known channels, sane conditions).
    pub rules: Vec<Rule>,
    /// Validated subscription rules.
    pub subscriptions: Vec<crate::broadcasts::rules::SubscriptionRule>,
    devices: DeviceRetention,
    retention: RetentionConfig,
    analytics: AnalyticsConfig,
}

impl EngineConfig {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<EngineConfig, EngineConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| EngineConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::from_toml(&text, &file)
    }

    /// Parses and validates `text`; `file` names it in errors.
    pub fn from_toml(text: &str, file: &str) -> Result<EngineConfig, EngineConfigError> {
        let parsed: EngineFile =
            toml::from_str(text).map_err(|err| parse_error(text, file, &err))?;
        Self::validate(parsed, file)
    }

    fn validate(parsed: EngineFile, file: &str) -> Result<EngineConfig, EngineConfigError> {
        let invalid = |key: String, message: String| EngineConfigError::Invalid {
            file: file.to_owned(),
            key,
            message,
        };
        let EngineFile {
            public_url,
            link_secret,
            tracking,
            retry,
            concurrency,
            channels,
            types,
            rules,
            subscriptions,
            devices,
            retention,
            analytics,
        } = parsed;
        retention
            .validate()
            .map_err(|message| invalid("retention".to_owned(), message))?;
        analytics
            .validate()
            .map_err(|message| invalid("analytics".to_owned(), message))?;
        if devices.stale_after.is_zero() || devices.delete_after.is_zero() {
            return Err(invalid(
                "devices".to_owned(),
                "stale_after and delete_after must be longer than zero".to_owned(),
            ));
        }
        validate_rules(&rules).map_err(|error| invalid("rules".to_owned(), error.to_string()))?;
        crate::broadcasts::rules::validate_all(&subscriptions)
            .map_err(|message| invalid("subscriptions".to_owned(), message))?;

        if let Some(url) = &public_url {
            check_http_url(url).map_err(|message| invalid("public_url".to_owned(), message))?;
        }
        let unsubscribe_links = match (&public_url, &link_secret) {
            (Some(url), Some(secret)) => Some(
                UnsubscribeLinks::new(url, secret)
                    .map_err(|err| invalid("link_secret".to_owned(), err.to_string()))?,
            ),
            (Some(_), None) => {
                return Err(invalid(
                    "link_secret".to_owned(),
                    "is required when public_url is set: it signs the unsubscribe links \
                     (at least 32 bytes; make one with `openssl rand -base64 32`)"
                        .to_owned(),
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "link_secret".to_owned(),
                    "is set, but public_url is not: links need both".to_owned(),
                ));
            }
            (None, None) => None,
        };
        let tracking_links = match (&public_url, &link_secret) {
            (Some(url), Some(secret)) => Some(
                TrackingLinks::new(
                    url,
                    secret,
                    tracking.opens.unwrap_or(true),
                    tracking.clicks.unwrap_or(true),
                )
                .map_err(|err| invalid("link_secret".to_owned(), err.to_string()))?,
            ),
            _ => {
                for (key, on) in [
                    ("tracking.opens", tracking.opens),
                    ("tracking.clicks", tracking.clicks),
                ] {
                    if on == Some(true) {
                        return Err(invalid(
                            key.to_owned(),
                            "needs public_url and link_secret: tracking links point there"
                                .to_owned(),
                        ));
                    }
                }
                None
            }
        };

        if retry.initial.is_zero() {
            return Err(invalid(
                "retry.initial".to_owned(),
                "must be longer than zero".to_owned(),
            ));
        }
        if retry.max < retry.initial {
            return Err(invalid(
                "retry.max".to_owned(),
                format!(
                    "{} is shorter than retry.initial ({})",
                    humantime::format_duration(retry.max),
                    humantime::format_duration(retry.initial)
                ),
            ));
        }
        if retry.max_attempts == 0 {
            return Err(invalid(
                "retry.max_attempts".to_owned(),
                "must be at least 1".to_owned(),
            ));
        }

        if let Some((channel, _)) = concurrency.iter().find(|(_, n)| **n == 0) {
            return Err(invalid(
                format!("concurrency.{channel}"),
                "must be at least 1; a channel with no slots never drains".to_owned(),
            ));
        }

        check_channels(&channels)
            .map_err(|err| invalid(format!("channels.{}", err.setting), err.message))?;

        let enabled = channels.enabled();

        let mut definitions = BTreeMap::new();
        for (name, config) in &types {
            // The same check as the management API's (`catalog`).
            config.check(name, &enabled).map_err(|err| {
                let key = match err.field.as_ref() {
                    "" => format!("types.{name}"),
                    field => format!("types.{name}.{field}"),
                };
                invalid(key, err.message)
            })?;
            if config.templates != TypeTemplates::default() {
                definitions.insert(name.clone(), config.templates.clone());
            }
        }
        let templates = TemplateSet::from_definitions(definitions)
            .map_err(|err| invalid("types.*.templates".to_owned(), err.to_string()))?;

        Ok(EngineConfig {
            public_url,
            unsubscribe_links,
            tracking_links,
            email: channels.email,
            webhook: channels.webhook,
            sms: channels.sms,
            apns: channels.apns,
            fcm: channels.fcm,
            web_push: channels.web_push,
            enabled,
            retry,
            concurrency,
            types,
            templates,
            rules,
            subscriptions,
            devices,
            retention,
            analytics,
        })
    }

    /// The one-click unsubscribe links' maker, when `public_url` (and so
    /// `link_secret`) is set.
    pub fn unsubscribe_links(&self) -> Option<UnsubscribeLinks> {
        self.unsubscribe_links.clone()
    }

    /// The open and click links' maker, with the `[tracking]` switches,
    /// when `public_url` (and so `link_secret`) is set — also when both
    /// switches are off, so links already sent keep working.
    pub fn tracking_links(&self) -> Option<TrackingLinks> {
        self.tracking_links.clone()
    }

    /// How long each kind of data is kept (`[retention]`).
    /// `[analytics]`.
    pub fn analytics(&self) -> AnalyticsConfig {
        self.analytics.clone()
    }

    pub fn retention(&self) -> RetentionConfig {
        self.retention
    }

    /// When unused devices are deactivated and deleted (`[devices]`).
    pub fn device_retention(&self) -> DeviceRetention {
        self.devices
    }

    /// The operator's defaults for every configured type.
    pub fn operator_defaults(&self) -> OperatorDefaults {
        let types = self
            .types
            .iter()
            .map(|(name, config)| (name.clone(), config.defaults()))
            .collect();
        OperatorDefaults { types }
    }

    /// The file's types (`[types.<name>]`), validated at load.
    pub fn types(&self) -> &BTreeMap<String, TypeDefinition> {
        &self.types
    }

    /// Every configured template, compiled (validated at load).
    pub fn templates(&self) -> TemplateSet {
        self.templates.clone()
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            initial: self.retry.initial,
            max: self.retry.max,
            max_attempts: self.retry.max_attempts,
        }
    }

    /// [`DispatcherConfig::default`] with this file's retry policy and
    /// per-channel concurrency.
    pub fn dispatcher_config(&self) -> DispatcherConfig {
        DispatcherConfig {
            retry: self.retry_policy(),
            concurrency: self
                .concurrency
                .iter()
                .map(|(channel, n)| (*channel, *n))
                .collect::<HashMap<_, _>>(),
            ..DispatcherConfig::default()
        }
    }

    /// Where webhook deliveries of `notification_type` go, if configured.
    pub fn webhook_url(&self, notification_type: &str) -> Option<&str> {
        self.types
            .get(notification_type)
            .and_then(|config| config.webhook_url.as_deref())
    }

    /// In-app (always) plus every channel with a `[channels.…]` section.
    pub fn enabled_channels(&self) -> BTreeSet<ChannelKind> {
        // In-app needs no section, so also `EngineConfig::default()` has it.
        let mut enabled = self.enabled.clone();
        enabled.insert(ChannelKind::InApp);
        enabled
    }
}

/// Runs the channels' own constructors, so the file is held to exactly the
/// checks the engine applies later. `EmailChannel::new` needs a Tokio
/// runtime (its pool spawns a task) and must be dropped inside it, and
/// `load` may be called inside or outside one: a scoped thread with its own
/// small runtime works in both cases.
fn check_channels(channels: &ChannelsConfig) -> Result<(), ConfigError> {
    // These need no runtime.
    if let Some(sms) = &channels.sms {
        drop(SmsChannel::new(sms.clone())?);
    }
    if let Some(apns) = &channels.apns {
        drop(ApnsChannel::new(apns.clone())?);
    }
    if let Some(fcm) = &channels.fcm {
        drop(FcmChannel::new(fcm.clone())?);
    }
    if let Some(web_push) = &channels.web_push {
        drop(WebPushChannel::new(web_push.clone())?);
    }
    if channels.email.is_none() && channels.webhook.is_none() {
        return Ok(());
    }
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|err| ConfigError {
                        setting: "email",
                        message: format!("cannot start a runtime to check it: {err}"),
                    })?;
                runtime.block_on(async {
                    if let Some(email) = &channels.email {
                        drop(EmailChannel::new(email.clone())?);
                    }
                    if let Some(webhook) = &channels.webhook {
                        drop(WebhookChannel::new(webhook.clone())?);
                    }
                    Ok(())
                })
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// toml's message with the table and line it points at. toml 0.9 keeps the
/// key path private, so the table is the nearest `[header]` above the
/// error's position.
fn parse_error(text: &str, file: &str, err: &toml::de::Error) -> EngineConfigError {
    let message = err.message().trim().replace('\n', "; ");
    let (table, line) = match err.span() {
        Some(span) => {
            // Back to a character boundary: a span is a byte offset, and
            // slicing inside a multi-byte character would panic.
            let mut start = span.start.min(text.len());
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            let before = &text[..start];
            let line = before.matches('\n').count() + 1;
            (enclosing_table(before), Some(line))
        }
        None => (String::new(), None),
    };
    EngineConfigError::Parse {
        file: file.to_owned(),
        message,
        table,
        line,
    }
}

/// The last `[table]` or `[[array]]` header in `before`, without brackets.
fn enclosing_table(before: &str) -> String {
    // The error's own line may be the header itself (e.g. `[channels.apns]`).
    before
        .lines()
        .rev()
        .skip_while(|line| line.trim().is_empty())
        .map(str::trim)
        .find(|line| line.starts_with('['))
        .map(|header| {
            let header = header.split('#').next().unwrap_or(header).trim();
            header
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preferences::Frequency;

    const EXAMPLE: &str = include_str!("../nudge.example.toml");

    fn parse(text: &str) -> Result<EngineConfig, EngineConfigError> {
        EngineConfig::from_toml(text, "nudge.toml")
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn example_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("nudge.example.toml");
        let config = EngineConfig::load(&path).unwrap();
        assert_eq!(
            config.enabled_channels(),
            BTreeSet::from([
                ChannelKind::InApp,
                ChannelKind::Email,
                ChannelKind::Sms,
                ChannelKind::Webhook
            ])
        );
        assert_eq!(
            config.public_url.as_deref(),
            Some("https://nudge.example.com")
        );
        assert_eq!(config.email.as_ref().unwrap().host, "smtp.example.com");
        let retry = config.retry_policy();
        assert_eq!(retry.initial, Duration::from_secs(5));
        assert_eq!(retry.max, Duration::from_secs(3600));
        assert_eq!(retry.max_attempts, 30);
        let dispatcher = config.dispatcher_config();
        assert_eq!(dispatcher.concurrency_for(ChannelKind::Email), 8);
        assert_eq!(dispatcher.concurrency_for(ChannelKind::Sms), 16);
        // In-app sends are group-committed inbox writes: a larger default.
        assert_eq!(dispatcher.concurrency_for(ChannelKind::InApp), 256);
        let defaults = config.operator_defaults();
        let payment = &defaults.types["payment_failed"];
        assert!(payment.critical);
        assert_eq!(payment.frequency, Frequency::Instant);
        assert!(payment.channels.contains(&ChannelKind::Email));
        // A workflow's channels are its steps'.
        assert_eq!(
            defaults.types["invoice_overdue"].channels,
            BTreeSet::from([ChannelKind::InApp, ChannelKind::Email, ChannelKind::Sms])
        );
        assert_eq!(
            config.webhook_url("payment_failed"),
            Some("https://hooks.example.com/nudge")
        );
        assert_eq!(config.webhook_url("weekly_report"), None);
        let templates = config.templates();
        assert!(
            templates
                .get("payment_failed", ChannelKind::Email)
                .is_some()
        );
        assert!(
            templates
                .get("payment_failed", ChannelKind::InApp)
                .is_some()
        );
    }

    #[test]
    fn example_file_is_the_one_included() {
        // The README points operators at this file; keep it non-trivial.
        assert!(EXAMPLE.contains("[channels.email]"));
        parse(EXAMPLE).unwrap();
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config = parse("").unwrap();
        assert_eq!(
            config.enabled_channels(),
            BTreeSet::from([ChannelKind::InApp])
        );
        assert_eq!(config.retry_policy(), RetryPolicy::default());
        assert!(config.operator_defaults().types.is_empty());
        assert!(config.templates().definitions().is_empty());
        assert_eq!(
            config
                .dispatcher_config()
                .concurrency_for(ChannelKind::Email),
            16
        );
        assert!(config.email.is_none() && config.webhook.is_none());

        let default = EngineConfig::default();
        assert_eq!(default.enabled_channels(), config.enabled_channels());
        assert_eq!(default.retry_policy(), RetryPolicy::default());
    }

    #[test]
    fn minimal_type_gets_defaults() {
        let config = parse("[types.welcome]\n").unwrap();
        let defaults = config.operator_defaults();
        let welcome = &defaults.types["welcome"];
        assert!(welcome.channels.is_empty());
        assert!(!welcome.critical);
        assert_eq!(welcome.frequency, Frequency::Instant);
        assert_eq!(config.retry_policy().max_attempts, 30);
    }

    #[test]
    fn unknown_key_is_named_with_table_and_line() {
        let text = "[retry]\nmax_attempts = 3\n\n[channels.email]\nhots = \"smtp\"\ntls = \"none\"\nfrom = \"a@b.c\"\n";
        let message = error(text);
        assert!(message.starts_with("nudge.toml: "), "{message}");
        assert!(message.contains("unknown field `hots`"), "{message}");
        assert!(message.contains("in channels.email at line 5"), "{message}");
    }

    #[test]
    fn unknown_channel_section_and_top_level_key_are_refused() {
        let message = error("[channels.apns]\nkey = \"x\"\n");
        assert!(message.contains("apns"), "{message}");
        let message = error("pubic_url = \"https://x.example\"\n");
        assert!(message.contains("unknown field `pubic_url`"), "{message}");
        assert!(message.contains("at line 1"), "{message}");
    }

    #[test]
    fn public_url_needs_a_long_enough_link_secret() {
        let secret = "0123456789abcdef0123456789abcdef";
        let config = parse(&format!(
            "public_url = \"https://n.example/\"\nlink_secret = \"{secret}\"\n"
        ))
        .unwrap();
        assert!(config.unsubscribe_links().is_some());
        assert!(!format!("{config:?}").contains(secret));
        assert!(parse("").unwrap().unsubscribe_links().is_none());

        let message = error("public_url = \"https://n.example\"\n");
        assert!(message.contains("invalid link_secret"), "{message}");
        assert!(
            message.contains("required when public_url is set"),
            "{message}"
        );
        let message = error("public_url = \"https://n.example\"\nlink_secret = \"short\"\n");
        assert!(message.contains("invalid link_secret"), "{message}");
        assert!(message.contains("at least 32 bytes"), "{message}");
        let message = error(&format!("link_secret = \"{secret}\"\n"));
        assert!(message.contains("public_url is not"), "{message}");
    }

    #[test]
    fn tracking_follows_public_url_and_can_be_switched_off() {
        let secret = "0123456789abcdef0123456789abcdef";
        let links = format!("public_url = \"https://n.example/\"\nlink_secret = \"{secret}\"\n");
        let tracking = parse(&links).unwrap().tracking_links().unwrap();
        assert!(tracking.opens() && tracking.clicks());
        assert!(!format!("{tracking:?}").contains(secret));

        let off = parse(&format!("{links}[tracking]\nopens = false\n")).unwrap();
        let tracking = off.tracking_links().unwrap();
        assert!(!tracking.opens() && tracking.clicks());

        assert!(parse("").unwrap().tracking_links().is_none());
        assert!(parse("[tracking]\nopens = false\nclicks = false\n").is_ok());
        let message = error("[tracking]\nclicks = true\n");
        assert!(message.contains("invalid tracking.clicks"), "{message}");
        assert!(message.contains("needs public_url"), "{message}");
        let message = error("[tracking]\npixels = true\n");
        assert!(message.contains("unknown field `pixels`"), "{message}");
    }

    #[test]
    fn bad_duration_is_named() {
        let message = error("[retry]\ninitial = \"soon\"\n");
        assert!(message.contains("in retry at line 2"), "{message}");
    }

    #[test]
    fn unconfigured_channel_is_refused() {
        let message = error("[types.payment_failed]\nchannels = [\"email\", \"in_app\"]\n");
        assert!(
            message.contains("types.payment_failed.channels"),
            "{message}"
        );
        assert!(
            message.contains("[channels.email] is not configured"),
            "{message}"
        );
        // In-app needs no section.
        parse("[types.payment_failed]\nchannels = [\"in_app\"]\n").unwrap();
    }

    #[test]
    fn workflow_steps_load_and_bad_ones_are_named() {
        let steps = "[types.payment_failed]\n\
                     [[types.payment_failed.steps]]\nchannel = \"in_app\"\n\
                     [[types.payment_failed.steps]]\nwait = \"1h\"\n\
                     [[types.payment_failed.steps]]\nchannel = \"webhook\"\nunless = [\"opened\"]\n";
        let message = error(steps);
        assert!(
            message.contains("invalid types.payment_failed.steps"),
            "{message}"
        );
        assert!(
            message.contains("[channels.webhook] is not configured"),
            "{message}"
        );
        let with_webhook = format!(
            "{steps}[channels.webhook]\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n"
        );
        let config = parse(&with_webhook).unwrap();
        let defaults = config.operator_defaults();
        let channels = &defaults.get("payment_failed").channels;
        assert!(channels.contains(&ChannelKind::InApp) && channels.contains(&ChannelKind::Webhook));

        let message = error(&steps.replace("\"1h\"", "\"soon\""));
        assert!(
            message.contains("invalid types.payment_failed.steps[1].wait"),
            "{message}"
        );
        let message = error(&steps.replace("wait = ", "pause = "));
        assert!(message.contains("unknown field `pause`"), "{message}");
        let both = "[types.t]\nchannels = [\"in_app\"]\n[[types.t.steps]]\nchannel = \"in_app\"\n";
        let message = error(both);
        assert!(message.contains("invalid types.t.channels"), "{message}");
    }

    #[test]
    fn unknown_channel_name_is_refused() {
        let message = error("[types.t]\nchannels = [\"pigeon\"]\n");
        assert!(message.contains("pigeon"), "{message}");
        assert!(message.contains("in types.t at line 2"), "{message}");
    }

    #[test]
    fn bad_template_names_type_channel_and_field() {
        let text = "[types.payment_failed]\nchannels = [\"in_app\"]\n\
                    [types.payment_failed.templates.channels.in_app]\ntitle = \"{{ oops \"\n";
        let message = error(text);
        assert!(
            message.contains("template payment_failed/in_app/title"),
            "{message}"
        );
        assert!(message.contains("syntax error"), "{message}");
    }

    #[test]
    fn invalid_channel_config_is_refused() {
        let message =
            error("[channels.email]\nhost = \"smtp\"\ntls = \"none\"\nfrom = \"not a mailbox\"\n");
        assert!(message.contains("invalid channels.email.from"), "{message}");
        let message = error("[channels.webhook]\nsecret = \"\"\n");
        assert!(
            message.contains("invalid channels.webhook.secret"),
            "{message}"
        );
    }

    #[test]
    fn zero_concurrency_and_bad_retry_are_refused() {
        let message = error("[concurrency]\nin_app = 0\n");
        assert!(message.contains("concurrency.in_app"), "{message}");
        let message = error("[retry]\ninitial = \"1m\"\nmax = \"1s\"\n");
        assert!(message.contains("retry.max"), "{message}");
        let message = error("[retry]\nmax_attempts = 0\n");
        assert!(message.contains("retry.max_attempts"), "{message}");
    }

    #[test]
    fn webhook_url_needs_the_webhook_channel() {
        let message = error("[types.t]\nwebhook_url = \"https://hooks.example.com\"\n");
        assert!(message.contains("types.t.webhook_url"), "{message}");
    }

    #[test]
    fn load_names_a_missing_file() {
        let error = EngineConfig::load(Path::new("/nonexistent/nudge.toml")).unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/nudge.toml"),
            "{error}"
        );
    }

    #[test]
    fn load_works_inside_a_runtime() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            parse("[channels.email]\nhost = \"smtp.example.com\"\ntls = \"starttls\"\nfrom = \"n@example.com\"\n")
                .unwrap();
        });
    }
}
