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
use super::activity::{FunnelPass, OpenSession, close_session};
use super::keys::{self, anonymous_actor, key, parts, user_actor};
use super::layout::{self, profile, summary};
use super::overlay::Overlay;
use crate::store::{Event, EventBody};

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
    let from_profile = overlay.counters(layout::profile_key(from))?;
    if from_profile.is_empty() {
        // Nothing was counted for the visitor: there is nothing to move.
        return Ok(());
    }
    let mut profile = overlay.counters(layout::profile_key(to))?;
    profile.resize(profile::LEN.max(profile.len()), 0);
    let from_at = |index: usize| from_profile.get(index).copied().unwrap_or(0);
    for index in [profile::EVENTS, profile::SESSIONS, profile::TIME_SPENT_MS] {
        profile[index] += from_at(index);
    }
    if profile[profile::FIRST_SEEN_MS] == 0
        || (from_at(profile::FIRST_SEEN_MS) != 0
            && from_at(profile::FIRST_SEEN_MS) < profile[profile::FIRST_SEEN_MS])
    {
        profile[profile::FIRST_SEEN_MS] = from_at(profile::FIRST_SEEN_MS);
    }
    profile[profile::LAST_SEEN_MS] =
        profile[profile::LAST_SEEN_MS].max(from_at(profile::LAST_SEEN_MS));

    // Active days, and the unique-user counts: every day, week and month
    // in which both were counted now counts one person.
    let days_of =
        |overlay: &Overlay<'_>, actor: &str| -> Result<BTreeSet<String>, AnalyticsError> {
            Ok(overlay
                .keys_with_prefix(&key("ad", &[actor]))?
                .iter()
                .filter_map(|marker| parts(marker).pop())
                .collect())
        };
    let their_days = days_of(overlay, from)?;
    let our_days = days_of(overlay, to)?;
    let periods_of = |days: &BTreeSet<String>| -> BTreeSet<(&'static str, String)> {
        days.iter()
            .filter_map(|day| day.parse::<jiff::civil::Date>().ok())
            .flat_map(|date| {
                [
                    ("d", keys::day(date)),
                    ("w", keys::week(date)),
                    ("m", keys::month(date)),
                ]
            })
            .collect()
    };
    for (granularity, period) in periods_of(&their_days).intersection(&periods_of(&our_days)) {
        overlay.add(
            layout::summary_key(granularity, period),
            &[(summary::USERS, -1)],
        )?;
    }
    for day in &their_days {
        overlay.remove(key("ad", &[from, day]));
        if !our_days.contains(day) {
            overlay.put(key("ad", &[to, day]), Vec::new());
            profile[profile::ACTIVE_DAYS] += 1;
        }
    }
    overlay.remove(layout::profile_key(from));
    overlay.set_counters(layout::profile_key(to), profile);

    for family in ["ae", "af"] {
        for counter in overlay.keys_with_prefix(&key(family, &[from]))? {
            let counts: Vec<(usize, i64)> = overlay
                .counters(counter.clone())?
                .into_iter()
                .enumerate()
                .collect();
            overlay.remove(counter.clone());
            if let Some(name) = parts(&counter).pop() {
                overlay.add(key(family, &[to, &name]), &counts)?;
            }
        }
    }

    // Funnel progress: the further pass wins.
    for pass_key in overlay.keys_with_prefix(&key("afu", &[from]))? {
        let pass: Option<FunnelPass> = overlay.get_json(&pass_key)?;
        overlay.remove(pass_key.clone());
        let (Some(pass), Some(funnel)) = (pass, parts(&pass_key).pop()) else {
            continue;
        };
        let target = key("afu", &[to, &funnel]);
        let theirs: Option<FunnelPass> = overlay.get_json(&target)?;
        if theirs.is_none_or(|theirs| pass.step > theirs.step) {
            overlay.put_json(target, &pass)?;
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
    let open_key = key("as", &[from]);
    if let Some(open) = overlay.get_json::<OpenSession>(&open_key)? {
        overlay.remove(open_key);
        let target = key("as", &[to]);
        if overlay.contains(&target)? {
            // Two open sessions cannot continue as one: the visitor's
            // ends where it stopped, among the user's ended sessions.
            let end = open.last;
            close_session(overlay, to, open, end, "identified")?;
        } else {
            overlay.put_json(target, &open)?;
        }
    }
    Ok(())
}
