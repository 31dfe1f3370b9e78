//! A user's preferences: get, replace as a whole, reset; and
//! [`pb::Preferences`] ↔ [`UserPreferences`]. A replacement is converted
//! (channel names, time zones, quiet hours) and then checked against the
//! operator's defaults now in force (no opt-out of a critical type) before
//! it is stored, exactly like the HTTP admin route.

use std::collections::{BTreeMap, HashMap};

use nudge_proto::v1 as pb;

use super::{
    GrpcState, ServiceError, channel, frequency_from_proto, frequency_to_proto, required_id,
};
use crate::channels::ChannelKind;
use crate::preferences::{QuietHours, TypePreferences, Tz, UserPreferences};

pub(super) async fn get(
    state: &GrpcState,
    request: pb::GetPreferencesRequest,
) -> Result<pb::GetPreferencesResponse, ServiceError> {
    let user_id = required_id("user_id", request.user_id)?;
    let preferences = state.preferences.get(&user_id).await?;
    Ok(pb::GetPreferencesResponse {
        preferences: Some(to_proto(preferences)),
    })
}

pub(super) async fn put(
    state: &GrpcState,
    request: pb::PutPreferencesRequest,
) -> Result<pb::PutPreferencesResponse, ServiceError> {
    let user_id = required_id("user_id", request.user_id)?;
    let preferences = from_proto(request.preferences.unwrap_or_default())?;
    preferences.validate(&state.catalog.settings().current().defaults)?;
    state.preferences.put(&user_id, &preferences).await?;
    Ok(pb::PutPreferencesResponse {
        preferences: Some(to_proto(preferences)),
    })
}

pub(super) async fn reset(
    state: &GrpcState,
    request: pb::ResetPreferencesRequest,
) -> Result<pb::ResetPreferencesResponse, ServiceError> {
    let user_id = required_id("user_id", request.user_id)?;
    let preferences = state.preferences.reset_all(&user_id).await?;
    Ok(pb::ResetPreferencesResponse {
        preferences: Some(to_proto(preferences)),
    })
}

fn from_proto(proto: pb::Preferences) -> Result<UserPreferences, ServiceError> {
    let types = proto
        .types
        .into_iter()
        .map(|(name, prefs)| {
            let field = format!("preferences.types[{name:?}]");
            let choice = TypePreferences {
                channels: switches(&format!("{field}.channels"), prefs.channels)?,
                frequency: frequency_from_proto(&format!("{field}.frequency"), prefs.frequency)?,
            };
            Ok((name, choice))
        })
        .collect::<Result<_, ServiceError>>()?;
    let quiet_hours = proto
        .quiet_hours
        .map(|quiet| QuietHours::new(&quiet.start, &quiet.end, &quiet.timezone))
        .transpose()
        .map_err(|err| ServiceError::invalid("preferences.quiet_hours", err))?;
    let timezone = match proto.timezone.as_str() {
        "" => None,
        name => {
            Some(Tz::new(name).map_err(|err| ServiceError::invalid("preferences.timezone", err))?)
        }
    };
    Ok(UserPreferences {
        channels: switches("preferences.channels", proto.channels)?,
        types,
        quiet_hours,
        timezone,
    })
}

fn switches(
    field: &str,
    proto: HashMap<String, bool>,
) -> Result<BTreeMap<ChannelKind, bool>, ServiceError> {
    proto
        .into_iter()
        .map(|(name, on)| Ok((channel(field, &name)?, on)))
        .collect()
}

fn to_proto(preferences: UserPreferences) -> pb::Preferences {
    let switches = |map: BTreeMap<ChannelKind, bool>| {
        map.into_iter()
            .map(|(channel, on)| (channel.as_str().to_owned(), on))
            .collect()
    };
    pb::Preferences {
        channels: switches(preferences.channels),
        types: preferences
            .types
            .into_iter()
            .map(|(name, prefs)| {
                let proto = pb::TypePreferences {
                    channels: switches(prefs.channels),
                    frequency: prefs
                        .frequency
                        .map_or(pb::Frequency::Unspecified, frequency_to_proto)
                        .into(),
                };
                (name, proto)
            })
            .collect(),
        quiet_hours: preferences.quiet_hours.map(|quiet| pb::QuietHours {
            start: quiet.start_hhmm(),
            end: quiet.end_hhmm(),
            timezone: quiet.timezone().name().to_owned(),
        }),
        timezone: preferences
            .timezone
            .map(|tz| tz.name().to_owned())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferences_round_trip() {
        let proto = pb::Preferences {
            channels: [("email".to_owned(), false)].into(),
            types: [(
                "digest".to_owned(),
                pb::TypePreferences {
                    channels: [("in_app".to_owned(), true)].into(),
                    frequency: pb::Frequency::Weekly.into(),
                },
            )]
            .into(),
            quiet_hours: Some(pb::QuietHours {
                start: "22:00".to_owned(),
                end: "07:00".to_owned(),
                timezone: "Europe/Berlin".to_owned(),
            }),
            timezone: "America/New_York".to_owned(),
        };
        assert_eq!(to_proto(from_proto(proto.clone()).unwrap()), proto);
    }

    #[test]
    fn bad_values_name_the_field() {
        let message = |proto: pb::Preferences| from_proto(proto).unwrap_err().to_string();
        let zone = message(pb::Preferences {
            timezone: "Mars/Olympus".to_owned(),
            ..Default::default()
        });
        assert!(zone.starts_with("preferences.timezone:"), "{zone}");
        let quiet = message(pb::Preferences {
            quiet_hours: Some(pb::QuietHours {
                start: "25:00".to_owned(),
                end: "07:00".to_owned(),
                timezone: "UTC".to_owned(),
            }),
            ..Default::default()
        });
        assert!(quiet.starts_with("preferences.quiet_hours:"), "{quiet}");
        let switch = message(pb::Preferences {
            channels: [("pigeon".to_owned(), true)].into(),
            ..Default::default()
        });
        assert!(switch.starts_with("preferences.channels:"), "{switch}");
    }
}
