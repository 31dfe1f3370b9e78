//! Who an event counts for, and merging an anonymous visitor into the
//! user they turn out to be.
//!
//! An event with a user id counts for that user. One with only an
//! anonymous id counts for the anonymous visitor, or, once that anonymous
//! id has been seen together with a user id (any call carrying both, as
//! Segment's libraries send after `identify`, or an `alias` whose
//! `previousId` is the anonymous id), for that user. The first user an
//! anonymous id is linked to keeps it.
//!
//! Linking merges what was counted for the visitor into the user, so the
//! person is counted once: in every day, week and month where both were
//! counted as unique users, the count drops by one; the visitor's events,
//! sessions, time, active days, features and funnel progress become the
//! user's.

use std::collections::BTreeSet;

use super::AnalyticsError;
use super::activity::close_session;
use super::actor::{ActorDetail, ActorState};
use super::keys::{self, anonymous_actor, key, parts, user_actor};
use super::layout::{self, profile, summary};
use super::overlay::Overlay;
use crate::event::{Event, EventBody};

/// The actor `event` counts for (`None` without any id).
pub fn actor_of(overlay: &Overlay<'_>, event: &Event) -> Result<Option<String>, AnalyticsError> {
    if let Some(user) = event.user_id.as_deref().filter(|id| !id.is_empty()) {
        return Ok(Some(user_actor(user)));
    }
    let Some(anonymous) = event.anonymous_id.as_deref().filter(|id| !id.is_empty()) else {
        return Ok(None);
    };
    Ok(Some(match overlay.get(&key("id", &[anonymous]))? {
        Some(user) => user_actor(&String::from_utf8_lossy(&user)),
        None => anonymous_actor(anonymous),
    }))
}

/// Links the event's anonymous id (or an alias's previous id) to its user
/// id, the first time they are seen together.
pub fn link(overlay: &mut Overlay<'_>, event: &Event) -> Result<(), AnalyticsError> {
    let Some(user) = event.user_id.as_deref().filter(|id| !id.is_empty()) else {
        return Ok(());
    };
    let mut anonymous_ids: Vec<&str> = Vec::new();
    if let Some(anonymous) = event.anonymous_id.as_deref().filter(|id| !id.is_empty()) {
        anonymous_ids.push(anonymous);
    }
    if let EventBody::Alias { previous_id } = &event.body
        && !previous_id.is_empty()
        && previous_id != user
    {
        anonymous_ids.push(previous_id);
    }
    for anonymous in anonymous_ids {
        let link_key = key("id", &[anonymous]);
        if overlay.contains(&link_key)? {
            continue;
        }
        overlay.put(link_key, user.as_bytes().to_vec());
        let actor = user_actor(user);
        overlay.put(key("aal", &[&actor, anonymous]), Vec::new());
        merge(overlay, &anonymous_actor(anonymous), &actor)?;
    }
    Ok(())
}

/// Moves everything counted for actor `from` to actor `to`.
fn merge(overlay: &mut Overlay<'_>, from: &str, to: &str) -> Result<(), AnalyticsError> {
    let Some(theirs) = overlay.take_actor(from)? else {
        // Nothing was counted for the visitor: there is nothing to move.
        return Ok(());
    };
    overlay.remove_actor(from)?;
    let mut ours = overlay.take_actor(to)?.unwrap_or_else(ActorState::new);
    let their_at = |index: usize| theirs.profile.get(index).copied().unwrap_or(0);
    let profile = &mut ours.profile;
    for index in [profile::EVENTS, profile::SESSIONS, profile::TIME_SPENT_MS] {
        profile[index] = profile[index].saturating_add(their_at(index));
    }
    let their_first = their_at(profile::FIRST_SEEN_MS);
    if profile[profile::FIRST_SEEN_MS] == 0
        || (their_first != 0 && their_first < profile[profile::FIRST_SEEN_MS])
    {
        profile[profile::FIRST_SEEN_MS] = their_first;
    }
    profile[profile::LAST_SEEN_MS] =
        profile[profile::LAST_SEEN_MS].max(their_at(profile::LAST_SEEN_MS));

    // The unique-user counts: every day, week and month in which both
    // were counted now counts one person.
    let periods_of = |days: &[jiff::civil::Date]| -> BTreeSet<(&'static str, String)> {
        days.iter()
            .flat_map(|date| {
                [
                    ("d", keys::day(*date)),
                    ("w", keys::week(*date)),
                    ("m", keys::month(*date)),
                ]
            })
            .collect()
    };
    let theirs_periods = periods_of(&theirs.detail.days);
    for (granularity, period) in theirs_periods.intersection(&periods_of(&ours.detail.days)) {
        overlay.add(
            layout::summary_key(granularity, period),
            &[(summary::USERS, -1)],
        )?;
    }
    let ActorDetail {
        days,
        open_session,
        funnels,
        events,
        features,
    } = theirs.detail;
    for day in days {
        ours.mark_day(day);
    }
    for (name, [count, with_feature]) in events {
        let by_name = ours.detail.events.entry(name).or_default();
        by_name[0] += count;
        by_name[1] += with_feature;
    }
    for (feature, count) in features {
        *ours.detail.features.entry(feature).or_default() += count;
    }
    // Funnel progress: the further pass wins.
    for (funnel, pass) in funnels {
        let ours_pass = ours.detail.funnels.get(&funnel);
        if ours_pass.is_none_or(|ours_pass| pass.step > ours_pass.step) {
            ours.detail.funnels.insert(funnel, pass);
        }
    }

    // Sessions: ended ones move; the open one continues as the user's
    // unless the user has one open, which then wins.
    for record_key in overlay.keys_with_prefix(&key("ax", &[from]))? {
        if let Some(record) = overlay.get(&record_key)? {
            let rest = parts(&record_key);
            overlay.remove(record_key);
            if let [_, start, session] = rest.as_slice() {
                overlay.put(key("ax", &[to, start, session]), record);
            }
        }
    }
    if let Some(open) = open_session {
        if ours.detail.open_session.is_some() {
            // Two open sessions cannot continue as one: the visitor's
            // ends where it stopped, among the user's ended sessions.
            let end = open.last;
            close_session(overlay, to, open, end, "identified")?;
        } else {
            ours.detail.open_session = Some(open);
        }
    }
    overlay.put_actor(to, ours)
}
