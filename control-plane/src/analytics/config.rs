//! `[analytics]` in the engine config file: what the rollups count and
//! how (see `control-plane/nudge.example.toml` for every key).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::Money;
use crate::channels::ChannelKind;
use crate::channels::email::humantime_duration;

/// `[analytics]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// Maintain the rollups (default on). Off, events are still stored and
    /// notifications still sent; the analytics reports answer from the
    /// rollups as they were, and a later switch-on catches up from the
    /// events still retained.
    pub enabled: bool,
    /// A session without events for this long has ended (default 30m).
    #[serde(with = "humantime_duration")]
    pub session_timeout: Duration,
    /// An outcome counts for the notification the user last opened, read
    /// or clicked if it came at most this long after (default 7d).
    #[serde(with = "humantime_duration")]
    pub attribution_window: Duration,
    /// The currency of costs and outcome amounts (one per installation).
    pub currency: String,
    /// Event properties naming the resource an event is about, the first
    /// present one wins (default `resource_id`, `product_id`).
    pub resource_properties: Vec<String>,
    /// Track events that are financial outcomes (e.g. `bill_paid_on_time`);
    /// the amount is the `amount`, `revenue` or `value` property.
    pub outcome_events: Vec<String>,
    /// Cost of one sent message by channel (`sms`) or channel and
    /// provider (`"sms.twilio"`, which wins); a notify can override it.
    pub cost_per_message: BTreeMap<String, Money>,
    /// `[[analytics.funnels]]`.
    pub funnels: Vec<FunnelDefinition>,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            enabled: true,
            session_timeout: Duration::from_secs(30 * 60),
            attribution_window: Duration::from_secs(7 * 86_400),
            currency: "USD".to_owned(),
            resource_properties: vec!["resource_id".to_owned(), "product_id".to_owned()],
            outcome_events: Vec::new(),
            cost_per_message: BTreeMap::new(),
            funnels: Vec::new(),
        }
    }
}

/// A funnel: event names in order. A user enters at the first step and
/// moves on when the next step's event comes within `window` of entering.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunnelDefinition {
    pub name: String,
    pub steps: Vec<String>,
    #[serde(with = "humantime_duration", default = "default_funnel_window")]
    pub window: Duration,
}

fn default_funnel_window() -> Duration {
    Duration::from_secs(7 * 86_400)
}

/// The provider behind each channel, as cost keys name it
/// (`"sms.twilio"`): each channel has one provider today.
pub fn provider_of(channel: ChannelKind) -> &'static str {
    match channel {
        ChannelKind::InApp => "nudge",
        ChannelKind::Email => "smtp",
        ChannelKind::Apns => "apns",
        ChannelKind::Fcm => "fcm",
        ChannelKind::WebPush => "web_push",
        ChannelKind::Sms => "twilio",
        ChannelKind::Webhook => "webhook",
    }
}

/// A configured duration as a span between timestamps; one longer than a
/// span can hold means "never ends".
pub fn span(duration: Duration) -> jiff::SignedDuration {
    jiff::SignedDuration::try_from(duration).unwrap_or(jiff::SignedDuration::MAX)
}

impl AnalyticsConfig {
    /// The configured cost of one message on `channel`: the
    /// `"channel.provider"` key, else the `"channel"` key, else zero.
    pub fn cost_of(&self, channel: ChannelKind) -> Money {
        let specific = format!("{}.{}", channel.as_str(), provider_of(channel));
        self.cost_per_message
            .get(&specific)
            .or_else(|| self.cost_per_message.get(channel.as_str()))
            .copied()
            .unwrap_or(Money::ZERO)
    }

    /// Refuses what cannot be counted; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.session_timeout.is_zero() {
            return Err("session_timeout must be longer than zero".to_owned());
        }
        if self.attribution_window.is_zero() {
            return Err("attribution_window must be longer than zero".to_owned());
        }
        let currency_ok =
            self.currency.len() == 3 && self.currency.bytes().all(|b| b.is_ascii_uppercase());
        if !currency_ok {
            return Err(format!(
                "currency `{}` is not an ISO 4217 code like \"USD\"",
                self.currency
            ));
        }
        if self.resource_properties.iter().any(String::is_empty) {
            return Err("resource_properties has an empty name".to_owned());
        }
        for (key, cost) in &self.cost_per_message {
            let channel = key
                .split_once('.')
                .map_or(key.as_str(), |(channel, _)| channel);
            let Some(kind) = ChannelKind::parse(channel) else {
                return Err(format!(
                    "cost_per_message.{key}: `{channel}` is not a channel"
                ));
            };
            if let Some((_, provider)) = key.split_once('.')
                && provider != provider_of(kind)
            {
                return Err(format!(
                    "cost_per_message.{key}: the {channel} channel's provider is `{}`",
                    provider_of(kind)
                ));
            }
            if cost.micros() < 0 {
                return Err(format!("cost_per_message.{key} is negative"));
            }
            if !cost.in_bounds() {
                return Err(format!(
                    "cost_per_message.{key} is above the largest amount, {}",
                    Money::MAX
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for funnel in &self.funnels {
            if funnel.name.is_empty() || !names.insert(funnel.name.as_str()) {
                return Err(format!(
                    "funnels: name `{}` is empty or repeated",
                    funnel.name
                ));
            }
            if funnel.steps.len() < 2 || funnel.steps.iter().any(String::is_empty) {
                return Err(format!(
                    "funnels.{}: steps needs at least two event names",
                    funnel.name
                ));
            }
            if funnel.window.is_zero() {
                return Err(format!(
                    "funnels.{}: window must be longer than zero",
                    funnel.name
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> AnalyticsConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn provider_key_wins_over_channel_key() {
        let config = parse(
            "[cost_per_message]\nsms = \"0.01\"\n\"sms.twilio\" = \"0.0079\"\nemail = 0.0001\n",
        );
        config.validate().unwrap();
        assert_eq!(config.cost_of(ChannelKind::Sms), Money(7_900));
        assert_eq!(config.cost_of(ChannelKind::Email), Money(100));
        assert_eq!(config.cost_of(ChannelKind::InApp), Money::ZERO);
    }

    #[test]
    fn bad_settings_are_named() {
        let cases = [
            (
                "[cost_per_message]\npigeon = \"1\"\n",
                "`pigeon` is not a channel",
            ),
            (
                "[cost_per_message]\n\"sms.vonage\" = \"1\"\n",
                "provider is `twilio`",
            ),
            ("[cost_per_message]\nsms = \"-1\"\n", "negative"),
            ("currency = \"dollars\"\n", "ISO 4217"),
            (
                "[[funnels]]\nname = \"f\"\nsteps = [\"a\"]\n",
                "at least two",
            ),
            (
                "[[funnels]]\nname = \"f\"\nsteps = [\"a\",\"b\"]\n[[funnels]]\nname = \"f\"\nsteps = [\"a\",\"b\"]\n",
                "repeated",
            ),
            ("session_timeout = \"0s\"\n", "session_timeout"),
        ];
        for (text, expected) in cases {
            let error = parse(text).validate().unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
