//! User notification preferences and their resolution into per-channel
//! decisions: send now, hold until quiet hours end, fold into a digest, or
//! suppress.
//!
//! # Resolution order (later wins)
//!
//! For notification type `T` and channel `C`:
//!
//! 1. the operator's [`TypeDefaults`] for `T`: is `C` on by default?
//! 2. the user's global switch for `C` ([`UserPreferences::channels`]);
//! 3. the user's choice for `T` on `C` ([`TypePreferences::channels`]), so a
//!    user can turn email off everywhere but back on for invoices.
//!
//! Then frequency: the user's per-type frequency, else the type's default.
//! `Never` suppresses; `Hourly`/`Daily`/`Weekly` fold into a digest at
//! [`next_digest_at`]; `Instant` sends now, or holds until quiet hours end.
//! A digest slot that falls inside quiet hours moves to the window's end.
//!
//! # Promises
//!
//! * **Critical types cannot be switched off.** Resolution ignores every
//!   opt-out (global or per type) and any frequency for a critical type: it
//!   is sent at once, bypassing quiet hours and digests. The setters refuse
//!   an opt-out of a critical type with [`PreferenceError::Critical`] so the
//!   user sees why; a *global* channel switch is accepted (it applies to all
//!   other types) and simply does not affect critical ones.
//! * **Quiet hours hold, never drop.** A message inside the window gets
//!   [`Action::HoldUntil`] the window's end.
//! * **Unknown types** (no operator defaults) resolve with
//!   [`TypeDefaults::for_unknown_type`]: every requested channel on,
//!   not critical, instant — an app that sends a new type is not silenced.
//! * **Time zone** for digests: [`UserPreferences::timezone`], else the quiet
//!   hours' zone, else UTC.

mod schedule;
mod store;

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::channels::ChannelKind;

pub use schedule::{DIGEST_HOUR, Frequency, QuietHours, Tz, WEEKLY_DIGEST_DAY, next_digest_at};
pub(crate) use schedule::{hhmm, local_instant};
pub use store::PreferenceStore;

/// The operator's defaults for one notification type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TypeDefaults {
    /// Channels this type goes out on unless the user says otherwise.
    pub channels: BTreeSet<ChannelKind>,
    /// Security and billing notices: cannot be switched off, never held.
    pub critical: bool,
    pub frequency: Frequency,
    /// For grouping in a preferences UI (e.g. "billing").
    pub category: Option<String>,
}

impl TypeDefaults {
    /// Used for a type the operator has not configured: all channels on.
    pub fn for_unknown_type() -> Self {
        TypeDefaults {
            channels: ChannelKind::ALL.into_iter().collect(),
            critical: false,
            frequency: Frequency::Instant,
            category: None,
        }
    }
}

/// The operator's defaults for every type (from the config file or API).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OperatorDefaults {
    pub types: BTreeMap<String, TypeDefaults>,
}

impl OperatorDefaults {
    /// The type's defaults, or [`TypeDefaults::for_unknown_type`].
    pub fn get(&self, notification_type: &str) -> std::borrow::Cow<'_, TypeDefaults> {
        match self.types.get(notification_type) {
            Some(defaults) => std::borrow::Cow::Borrowed(defaults),
            None => std::borrow::Cow::Owned(TypeDefaults::for_unknown_type()),
        }
    }

    fn is_critical(&self, notification_type: &str) -> bool {
        self.types
            .get(notification_type)
            .is_some_and(|defaults| defaults.critical)
    }
}

/// One user's choices for one type; absent entries mean "as the layer
/// below says".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TypePreferences {
    /// Per channel, on or off for this type.
    pub channels: BTreeMap<ChannelKind, bool>,
    /// The type's frequency; `null` or absent: the type's default.
    pub frequency: Option<Frequency>,
}

/// Everything one user chose. The stored (JSON) form of a user's
/// preferences, and the API's `UserPreferences` (the field docs are its
/// descriptions).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
#[schema(
    description = "Everything one user chose; absent entries mean \"the operator's default\". Critical types cannot be switched off (a document that tries is refused with 400)."
)]
pub struct UserPreferences {
    /// Global per-channel switches.
    pub channels: BTreeMap<ChannelKind, bool>,
    #[schema(schema_with = types_schema)]
    pub types: BTreeMap<String, TypePreferences>,
    #[schema(value_type = Option<schedule::QuietHoursRepr>)]
    pub quiet_hours: Option<QuietHours>,
    /// IANA zone for digest times (else the quiet hours' zone, else UTC); a
    /// name the server's time zone database lacks is a 400.
    #[schema(value_type = Option<String>, format = "iana-time-zone")]
    pub timezone: Option<Tz>,
}

/// The schema of [`UserPreferences::types`], from the limits
/// [`UserPreferences::validate`] enforces.
fn types_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    use utoipa::openapi::{Ref, RefOr};
    let name = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_TYPE_NAME_CHARS))
        .pattern(Some(crate::http::openapi::NO_CONTROL_CHARACTERS));
    ObjectBuilder::new()
        .property_names(Some(name))
        .max_properties(Some(MAX_PREFERENCE_TYPES))
        .additional_properties(Some(RefOr::Ref(Ref::from_schema_name("TypePreferences"))))
        .description(Some(format!(
            "Per notification type: at most {MAX_PREFERENCE_TYPES} types, each name 1 to \
             {MAX_TYPE_NAME_CHARS} characters without control characters (a notify's `type`)."
        )))
        .build()
}

/// Most types one user's document may name. Far above the types an
/// operator defines; it bounds what one user can make the engine read
/// with every notification they get.
pub const MAX_PREFERENCE_TYPES: usize = 500;

/// Longest type name a document may use, in characters: the length a
/// notify's `type` may have ([`nudge_proto::validate::MAX_NAME_BYTES`]
/// bytes). Counted in characters so that the OpenAPI document's
/// `maxLength` (which counts characters) states the same rule; a longer
/// name in bytes simply never matches a notify.
pub const MAX_TYPE_NAME_CHARS: usize = nudge_proto::validate::MAX_NAME_BYTES;

/// Why a preference change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreferenceError {
    #[error(
        "notification type {notification_type:?} is critical and cannot be switched off ({what})"
    )]
    Critical {
        notification_type: String,
        what: String,
    },
    #[error("unknown IANA time zone {name:?}: {detail}")]
    TimeZone { name: String, detail: String },
    #[error("quiet hours {field} {value:?} is not a time of day as HH:MM (00:00-23:59)")]
    QuietHoursTime { field: &'static str, value: String },
    #[error("invalid notification type name {name:?} in types: {problem}")]
    TypeName { name: String, problem: String },
    #[error("invalid types: {count} entries, more than the {MAX_PREFERENCE_TYPES} a user may set")]
    TooManyTypes { count: usize },
    #[error("{0}")]
    InvalidUser(String),
    #[error("preference store failed: {0}")]
    Storage(String),
    #[error("stored preferences for user {user:?} are corrupt: {detail}")]
    Corrupt { user: String, detail: String },
}

impl UserPreferences {
    /// Sets the global switch for one channel. Always accepted; critical
    /// types ignore it.
    pub fn set_channel(&mut self, channel: ChannelKind, enabled: bool) {
        self.channels.insert(channel, enabled);
    }

    /// Sets the user's choice for one type on one channel. Switching a
    /// critical type off is refused.
    pub fn set_type_channel(
        &mut self,
        defaults: &OperatorDefaults,
        notification_type: &str,
        channel: ChannelKind,
        enabled: bool,
    ) -> Result<(), PreferenceError> {
        if !enabled && defaults.is_critical(notification_type) {
            return Err(PreferenceError::Critical {
                notification_type: notification_type.to_owned(),
                what: format!("opting out of {channel}"),
            });
        }
        self.types
            .entry(notification_type.to_owned())
            .or_default()
            .channels
            .insert(channel, enabled);
        Ok(())
    }

    /// Sets the user's frequency for one type. Critical types are always
    /// instant: any other frequency is refused.
    pub fn set_frequency(
        &mut self,
        defaults: &OperatorDefaults,
        notification_type: &str,
        frequency: Frequency,
    ) -> Result<(), PreferenceError> {
        if frequency != Frequency::Instant && defaults.is_critical(notification_type) {
            return Err(PreferenceError::Critical {
                notification_type: notification_type.to_owned(),
                what: format!("frequency {frequency:?}"),
            });
        }
        self.types
            .entry(notification_type.to_owned())
            .or_default()
            .frequency = Some(frequency);
        Ok(())
    }

    /// Checks a whole document (e.g. one a client PUTs) against the
    /// operator's defaults: no opt-outs of critical types. Time zones and
    /// quiet hours were already validated when they were built.
    pub fn validate(&self, defaults: &OperatorDefaults) -> Result<(), PreferenceError> {
        if self.types.len() > MAX_PREFERENCE_TYPES {
            return Err(PreferenceError::TooManyTypes {
                count: self.types.len(),
            });
        }
        for name in self.types.keys() {
            check_type_name(name)?;
        }
        for (notification_type, prefs) in &self.types {
            if !defaults.is_critical(notification_type) {
                continue;
            }
            if let Some((channel, _)) = prefs.channels.iter().find(|(_, enabled)| !**enabled) {
                return Err(PreferenceError::Critical {
                    notification_type: notification_type.clone(),
                    what: format!("opting out of {channel}"),
                });
            }
            if let Some(frequency) = prefs.frequency.filter(|f| *f != Frequency::Instant) {
                return Err(PreferenceError::Critical {
                    notification_type: notification_type.clone(),
                    what: format!("frequency {frequency:?}"),
                });
            }
        }
        Ok(())
    }

    /// Back to the operator's defaults for one type.
    pub fn reset_type(&mut self, notification_type: &str) {
        self.types.remove(notification_type);
    }

    /// Back to the operator's defaults for everything: channel switches,
    /// type choices and quiet hours. The time zone is kept: it is a fact
    /// about the user, not a preference with a default.
    pub fn reset_all(&mut self) {
        let timezone = self.timezone.take();
        *self = UserPreferences {
            timezone,
            ..UserPreferences::default()
        };
    }

    fn digest_zone(&self) -> jiff::tz::TimeZone {
        self.timezone
            .as_ref()
            .or(self.quiet_hours.as_ref().map(QuietHours::timezone))
            .map_or(jiff::tz::TimeZone::UTC, |tz| tz.time_zone().clone())
    }
}

/// A type name as a notify may carry it: 1 to [`MAX_TYPE_NAME_CHARS`]
/// characters, no control characters (NUL among them: names are keys of
/// the digest and preference stores).
fn check_type_name(name: &str) -> Result<(), PreferenceError> {
    let problem = if name.is_empty() {
        "is empty".to_owned()
    } else if name.chars().count() > MAX_TYPE_NAME_CHARS {
        format!("is longer than {MAX_TYPE_NAME_CHARS} characters")
    } else if name.chars().any(char::is_control) {
        "contains a control character".to_owned()
    } else {
        return Ok(());
    };
    Err(PreferenceError::TypeName {
        name: name.chars().take(64).collect(),
        problem,
    })
}

/// What to do with one channel of one notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    SendNow,
    /// Inside quiet hours: send when the window ends.
    HoldUntil(Timestamp),
    /// Fold into the digest that goes out at this time.
    Digest(Timestamp),
    Suppressed(SuppressReason),
}

/// Which layer switched a channel off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressReason {
    /// The operator's defaults leave this channel off for the type.
    OffByDefault,
    /// The user's global switch for the channel.
    UserChannelOff,
    /// The user's choice for this type and channel.
    UserTypeChannelOff,
    /// The type's frequency is `Never`.
    FrequencyNever,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelDecision {
    pub channel: ChannelKind,
    pub action: Action,
}

/// Decides, for each channel, what happens to one notification of
/// `notification_type` created at `now`.
///
/// `requested` lists the channels the notify call or rule asked for; one
/// decision is returned per distinct requested channel, in order. An empty
/// list means "wherever the user's resolved preferences allow": decisions
/// are returned only for channels that resolve on.
pub fn resolve(
    defaults: &OperatorDefaults,
    user: &UserPreferences,
    notification_type: &str,
    requested: &[ChannelKind],
    now: Timestamp,
) -> Vec<ChannelDecision> {
    let type_defaults = defaults.get(notification_type);
    let type_prefs = user.types.get(notification_type);
    let (channels, keep_suppressed): (Vec<ChannelKind>, bool) = if requested.is_empty() {
        (ChannelKind::ALL.to_vec(), false)
    } else {
        let mut seen = BTreeSet::new();
        let unique = requested
            .iter()
            .copied()
            .filter(|channel| seen.insert(*channel))
            .collect();
        (unique, true)
    };

    let mut decisions = Vec::with_capacity(channels.len());
    for channel in channels {
        let action = match channel_switch(&type_defaults, user, type_prefs, channel) {
            Err(reason) => {
                if !keep_suppressed {
                    continue;
                }
                Action::Suppressed(reason)
            }
            Ok(()) => timing(&type_defaults, user, type_prefs, now),
        };
        decisions.push(ChannelDecision { channel, action });
    }
    decisions
}

/// Steps 1-3 of the resolution order; `Err` names the layer that left the
/// channel off.
fn channel_switch(
    type_defaults: &TypeDefaults,
    user: &UserPreferences,
    type_prefs: Option<&TypePreferences>,
    channel: ChannelKind,
) -> Result<(), SuppressReason> {
    let mut state = if type_defaults.channels.contains(&channel) {
        Ok(())
    } else {
        Err(SuppressReason::OffByDefault)
    };
    if let Some(enabled) = user.channels.get(&channel) {
        state = if *enabled {
            Ok(())
        } else {
            Err(SuppressReason::UserChannelOff)
        };
    }
    if let Some(enabled) = type_prefs.and_then(|prefs| prefs.channels.get(&channel)) {
        state = if *enabled {
            Ok(())
        } else {
            Err(SuppressReason::UserTypeChannelOff)
        };
    }
    if type_defaults.critical {
        // Opt-outs do not count; an opt-in to an extra channel does.
        let opted_in = user.channels.get(&channel) == Some(&true)
            || type_prefs.and_then(|prefs| prefs.channels.get(&channel)) == Some(&true);
        if type_defaults.channels.contains(&channel) || opted_in {
            return Ok(());
        }
        return Err(SuppressReason::OffByDefault);
    }
    state
}

/// Frequency, digests and quiet hours for a channel that is on.
fn timing(
    type_defaults: &TypeDefaults,
    user: &UserPreferences,
    type_prefs: Option<&TypePreferences>,
    now: Timestamp,
) -> Action {
    if type_defaults.critical {
        return Action::SendNow;
    }
    let frequency = type_prefs
        .and_then(|prefs| prefs.frequency)
        .unwrap_or(type_defaults.frequency);
    let quiet_until = |at: Timestamp| {
        user.quiet_hours
            .as_ref()
            .and_then(|quiet| quiet.quiet_until(at))
    };
    match frequency {
        Frequency::Never => Action::Suppressed(SuppressReason::FrequencyNever),
        Frequency::Instant => match quiet_until(now) {
            Some(until) => Action::HoldUntil(until),
            None => Action::SendNow,
        },
        Frequency::Hourly | Frequency::Daily | Frequency::Weekly => {
            let at = next_digest_at(frequency, now, &user.digest_zone());
            Action::Digest(quiet_until(at).unwrap_or(at))
        }
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    use ChannelKind::{Email, InApp, Sms};

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    /// Noon UTC, outside any quiet hours used below.
    fn noon() -> Timestamp {
        ts("2024-06-12T12:00:00Z")
    }

    fn defaults() -> OperatorDefaults {
        let mut types = BTreeMap::new();
        types.insert(
            "comment".to_owned(),
            TypeDefaults {
                channels: [Email, InApp].into_iter().collect(),
                critical: false,
                frequency: Frequency::Instant,
                category: Some("social".into()),
            },
        );
        types.insert(
            "payment_failed".to_owned(),
            TypeDefaults {
                channels: [Email, Sms].into_iter().collect(),
                critical: true,
                frequency: Frequency::Instant,
                category: Some("billing".into()),
            },
        );
        OperatorDefaults { types }
    }

    fn actions(decisions: &[ChannelDecision]) -> Vec<(ChannelKind, Action)> {
        decisions.iter().map(|d| (d.channel, d.action)).collect()
    }

    #[test]
    fn operator_defaults_apply_without_user_choices() {
        let user = UserPreferences::default();
        let decisions = resolve(&defaults(), &user, "comment", &[Email, Sms], noon());
        assert_eq!(
            actions(&decisions),
            vec![
                (Email, Action::SendNow),
                (Sms, Action::Suppressed(SuppressReason::OffByDefault)),
            ]
        );
        // Empty request: only channels that resolve on.
        let decisions = resolve(&defaults(), &user, "comment", &[], noon());
        assert_eq!(
            actions(&decisions),
            vec![(InApp, Action::SendNow), (Email, Action::SendNow)]
        );
    }

    #[test]
    fn resolution_order_global_then_per_type() {
        let defaults = defaults();
        let mut user = UserPreferences::default();
        user.set_channel(Email, false);
        user.set_channel(Sms, true);
        let decisions = resolve(&defaults, &user, "comment", &[Email, Sms], noon());
        assert_eq!(
            actions(&decisions),
            vec![
                (Email, Action::Suppressed(SuppressReason::UserChannelOff)),
                (Sms, Action::SendNow),
            ]
        );
        // Per-type choices override the global switches, both ways.
        user.set_type_channel(&defaults, "comment", Email, true)
            .unwrap();
        user.set_type_channel(&defaults, "comment", Sms, false)
            .unwrap();
        let decisions = resolve(&defaults, &user, "comment", &[Email, Sms], noon());
        assert_eq!(
            actions(&decisions),
            vec![
                (Email, Action::SendNow),
                (Sms, Action::Suppressed(SuppressReason::UserTypeChannelOff)),
            ]
        );
    }

    #[test]
    fn critical_types_cannot_be_disabled() {
        let defaults = defaults();
        let mut user = UserPreferences::default();
        let error = user
            .set_type_channel(&defaults, "payment_failed", Email, false)
            .unwrap_err();
        assert!(matches!(error, PreferenceError::Critical { .. }));
        assert!(error.to_string().contains("payment_failed"), "{error}");
        assert!(
            user.set_frequency(&defaults, "payment_failed", Frequency::Daily)
                .is_err()
        );

        // Opt-outs that got in anyway (global switch, stored document) are
        // ignored, as are quiet hours and digests.
        user.set_channel(Email, false);
        user.types.insert(
            "payment_failed".into(),
            TypePreferences {
                channels: [(Sms, false)].into_iter().collect(),
                frequency: Some(Frequency::Never),
            },
        );
        assert!(user.validate(&defaults).is_err());
        user.quiet_hours = Some(QuietHours::new("00:00", "23:59", "UTC").unwrap());
        let decisions = resolve(
            &defaults,
            &user,
            "payment_failed",
            &[Email, Sms, InApp],
            noon(),
        );
        assert_eq!(
            actions(&decisions),
            vec![
                (Email, Action::SendNow),
                (Sms, Action::SendNow),
                (InApp, Action::Suppressed(SuppressReason::OffByDefault)),
            ]
        );
    }

    #[test]
    fn quiet_hours_hold_and_never_drop() {
        let mut user = UserPreferences {
            quiet_hours: Some(QuietHours::new("22:00", "07:00", "Europe/Berlin").unwrap()),
            ..UserPreferences::default()
        };
        // 23:30 Berlin.
        let now = ts("2024-06-10T21:30:00Z");
        let decisions = resolve(&defaults(), &user, "comment", &[Email, InApp], now);
        let until = ts("2024-06-11T05:00:00Z");
        assert_eq!(
            actions(&decisions),
            vec![
                (Email, Action::HoldUntil(until)),
                (InApp, Action::HoldUntil(until)),
            ]
        );
        // Outside the window: at once.
        let decisions = resolve(&defaults(), &user, "comment", &[Email], noon());
        assert_eq!(actions(&decisions), vec![(Email, Action::SendNow)]);
        // An hourly digest slot inside quiet hours moves to the window end.
        user.set_frequency(&defaults(), "comment", Frequency::Hourly)
            .unwrap();
        let decisions = resolve(&defaults(), &user, "comment", &[Email], now);
        assert_eq!(actions(&decisions), vec![(Email, Action::Digest(until))]);
    }

    #[test]
    fn frequencies_digest_and_never() {
        let defaults = defaults();
        let mut user = UserPreferences {
            timezone: Some(Tz::new("America/New_York").unwrap()),
            ..UserPreferences::default()
        };
        user.set_frequency(&defaults, "comment", Frequency::Daily)
            .unwrap();
        // 08:00 EDT → 09:00 EDT the same day.
        let decisions = resolve(&defaults, &user, "comment", &[Email], noon());
        assert_eq!(
            actions(&decisions),
            vec![(Email, Action::Digest(ts("2024-06-12T13:00:00Z")))]
        );
        user.set_frequency(&defaults, "comment", Frequency::Never)
            .unwrap();
        let decisions = resolve(&defaults, &user, "comment", &[Email], noon());
        assert_eq!(
            actions(&decisions),
            vec![(Email, Action::Suppressed(SuppressReason::FrequencyNever))]
        );
    }

    #[test]
    fn reset_per_type_and_all() {
        let defaults = defaults();
        let mut user = UserPreferences {
            timezone: Some(Tz::new("Europe/Berlin").unwrap()),
            quiet_hours: Some(QuietHours::new("22:00", "07:00", "UTC").unwrap()),
            ..UserPreferences::default()
        };
        user.set_type_channel(&defaults, "comment", Email, false)
            .unwrap();
        user.set_type_channel(&defaults, "other", Email, false)
            .unwrap();
        user.set_channel(InApp, false);
        user.reset_type("comment");
        assert!(!user.types.contains_key("comment"));
        assert!(user.types.contains_key("other"));
        let decisions = resolve(&defaults, &user, "comment", &[Email], noon());
        assert_eq!(actions(&decisions), vec![(Email, Action::SendNow)]);
        user.reset_all();
        assert_eq!(
            user,
            UserPreferences {
                timezone: Some(Tz::new("Europe/Berlin").unwrap()),
                ..UserPreferences::default()
            }
        );
    }

    #[test]
    fn unknown_types_send_where_requested() {
        let user = UserPreferences::default();
        let decisions = resolve(&defaults(), &user, "brand_new", &[Sms, Sms], noon());
        assert_eq!(actions(&decisions), vec![(Sms, Action::SendNow)]);
    }

    #[test]
    fn json_form() {
        let json = r#"{
            "channels": {"email": false},
            "types": {"comment": {"channels": {"sms": true}, "frequency": "daily"}},
            "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Europe/Berlin"},
            "timezone": "Europe/Berlin"
        }"#;
        let user: UserPreferences = serde_json::from_str(json).unwrap();
        assert_eq!(user.channels.get(&Email), Some(&false));
        let back: UserPreferences =
            serde_json::from_str(&serde_json::to_string(&user).unwrap()).unwrap();
        assert_eq!(back, user);
        let action = serde_json::to_value(Action::HoldUntil(ts("2024-06-11T05:00:00Z"))).unwrap();
        assert_eq!(
            action,
            serde_json::json!({"hold_until": "2024-06-11T05:00:00Z"})
        );
    }
}
