//! Folding one ingested event into the activity rollups: summaries with
//! unique users and sessions, sessions, per-actor engagement, resources,
//! funnels; outcomes go on to `attribution`.
//!
//! What counts as activity: `track`, `page` and `screen` calls. `identify`
//! and `alias` only link identities (see `identity`); session calls only
//! start and end sessions; `group` and `notify` are not user activity.
//!
//! An event's time is the client's `timestamp`, else when the agent
//! received it, else when the control plane ingested it. Sessions assume
//! events arrive roughly in order per actor: an event older than the
//! actor's open session counts for that session without moving its ends.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::AnalyticsConfig;
use super::keys::{self, key};
use super::layout::{self, profile, sessions, summary};
use super::overlay::Overlay;
use super::{AnalyticsError, attribution, identity};
use crate::store::{Event, EventBody, JsonObject};

/// An actor's open session (`as`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenSession {
    pub key: String,
    pub start: Timestamp,
    pub last: Timestamp,
    pub events: u64,
    /// Started by a session call (ends by one, or by inactivity).
    pub explicit: bool,
    /// The last day it was counted in the unique-session figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_day: Option<jiff::civil::Date>,
}

/// A session that ended (`ax`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub key: String,
    pub start: Timestamp,
    pub end: Timestamp,
    /// `ended` (a session end call), `inactivity`, `replaced` (a new
    /// session start came first), `identified` (an anonymous visitor's
    /// session, when they turned out to be a user with a session open).
    pub end_reason: String,
    pub events: u64,
}

/// An actor's pass through a funnel (`afu`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunnelPass {
    /// Index of the last step reached.
    pub step: usize,
    pub entered_at: Timestamp,
    pub entry_day: String,
}

/// Everything a pass needs besides the overlay.
pub struct Context<'a> {
    pub config: &'a AnalyticsConfig,
    /// Names new inferred sessions (unique, never reused).
    pub db: &'a sled::Db,
    /// Metric changes, counted once the pass has committed.
    pub metrics: &'a super::metrics::PendingMetrics,
}

/// When the event happened.
pub fn event_time(event: &Event) -> Timestamp {
    event
        .timestamp
        .or(event.received_at)
        .unwrap_or(event.ingested_at)
}

/// Folds `event` into the rollups.
pub fn fold(
    overlay: &mut Overlay<'_>,
    context: &Context<'_>,
    event: &Event,
) -> Result<(), AnalyticsError> {
    if matches!(event.body, EventBody::Notify(_) | EventBody::Group { .. }) {
        return Ok(());
    }
    identity::link(overlay, event)?;
    let Some(actor) = identity::actor_of(overlay, event)? else {
        return Ok(());
    };
    let at = event_time(event);
    match &event.body {
        EventBody::SessionStart { session_id, .. } => {
            start_session(overlay, context, &actor, at, Some(session_id))?;
        }
        EventBody::SessionEnd { session_id, .. } => end_session(overlay, &actor, at, session_id)?,
        EventBody::Track {
            event: name,
            properties,
        } => {
            let new_session = touch_session(overlay, context, &actor, at)?;
            count_activity(overlay, &actor, new_session, at, name, feature(properties))?;
            count_resource(overlay, context.config, at, name, properties)?;
            advance_funnels(overlay, context.config, &actor, at, name)?;
            if context
                .config
                .outcome_events
                .iter()
                .any(|outcome| outcome == name)
            {
                attribution::outcome(overlay, context, &actor, at, name, properties)?;
            }
        }
        EventBody::Page {
            name, properties, ..
        }
        | EventBody::Screen {
            name, properties, ..
        } => {
            let kind = event.kind().as_str();
            let label = name
                .as_deref()
                .map_or_else(|| kind.to_owned(), |name| format!("{kind}:{name}"));
            let new_session = touch_session(overlay, context, &actor, at)?;
            count_activity(
                overlay,
                &actor,
                new_session,
                at,
                &label,
                feature(properties),
            )?;
        }
        EventBody::Identify { .. }
        | EventBody::Alias { .. }
        | EventBody::Group { .. }
        | EventBody::Notify(_) => {}
    }
    Ok(())
}

/// The feature an event says it shows use of (its `feature` property);
/// without one, the event's name is the feature.
fn feature(properties: &JsonObject) -> Option<&str> {
    match properties.get("feature") {
        Some(Value::String(feature)) if !feature.is_empty() => Some(feature),
        _ => None,
    }
}

fn ms(at: Timestamp) -> i64 {
    at.as_millisecond()
}

/// Events, unique users and sessions per period; the actor's engagement.
///
/// Unique users need no membership sets: an actor is new in a day when
/// it has no day marker (`ad`) for it yet, and new in a week or month
/// when it has none in that week's or month's days. Sessions likewise
/// (see [`touch_session`]).
fn count_activity(
    overlay: &mut Overlay<'_>,
    actor: &str,
    new_session: [bool; 3],
    at: Timestamp,
    name: &str,
    feature: Option<&str>,
) -> Result<(), AnalyticsError> {
    let date = keys::utc_date(at);
    let day = keys::day(date);
    let day_marker = key("ad", &[actor, &day]);
    let mut new_user = [false; 3];
    if !overlay.contains(&day_marker)? {
        new_user[0] = true;
        new_user[1] = !has_day_in(overlay, actor, keys::week_start(date), keys::week_end(date))?;
        new_user[2] = !has_day_in(
            overlay,
            actor,
            keys::month_start(date),
            date.last_of_month(),
        )?;
        overlay.put(day_marker, Vec::new());
    }
    let periods = [day, keys::week(date), keys::month(date)];
    for (index, (granularity, period)) in layout::GRANULARITIES.iter().zip(&periods).enumerate() {
        let mut deltas = vec![(summary::EVENTS, 1)];
        if new_user[index] {
            deltas.push((summary::USERS, 1));
        }
        if new_session[index] {
            deltas.push((summary::SESSIONS, 1));
        }
        overlay.add(layout::summary_key(granularity, period), &deltas)?;
    }
    let mut profile = overlay.counters(layout::profile_key(actor))?;
    profile.resize(profile::LEN.max(profile.len()), 0);
    profile[profile::EVENTS] += 1;
    if profile[profile::FIRST_SEEN_MS] == 0 || ms(at) < profile[profile::FIRST_SEEN_MS] {
        profile[profile::FIRST_SEEN_MS] = ms(at);
    }
    profile[profile::LAST_SEEN_MS] = profile[profile::LAST_SEEN_MS].max(ms(at));
    if new_user[0] {
        profile[profile::ACTIVE_DAYS] += 1;
    }
    overlay.set_counters(layout::profile_key(actor), profile);
    // Events by name: [count, of which with a `feature` property]; the
    // features of those go to `af`, so most events write one key.
    match feature {
        Some(feature) => {
            overlay.add(key("ae", &[actor, name]), &[(0, 1), (1, 1)])?;
            overlay.add(key("af", &[actor, feature]), &[(0, 1)])?;
        }
        None => overlay.add(key("ae", &[actor, name]), &[(0, 1)])?,
    }
    Ok(())
}

/// Whether `actor` has a day marker from `from` to `to`.
pub fn has_day_in(
    overlay: &Overlay<'_>,
    actor: &str,
    from: jiff::civil::Date,
    to: jiff::civil::Date,
) -> Result<bool, AnalyticsError> {
    overlay.any_key_in(
        &key("ad", &[actor, &keys::day(from)]),
        &key("ad", &[actor, &keys::day(to)]),
    )
}

/// The resource an event is about, from the configured properties.
fn resource_of(config: &AnalyticsConfig, properties: &JsonObject) -> Option<String> {
    config
        .resource_properties
        .iter()
        .find_map(|name| match properties.get(name)? {
            Value::String(text) if !text.is_empty() => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        })
}

fn count_resource(
    overlay: &mut Overlay<'_>,
    config: &AnalyticsConfig,
    at: Timestamp,
    name: &str,
    properties: &JsonObject,
) -> Result<(), AnalyticsError> {
    let Some(resource) = resource_of(config, properties) else {
        return Ok(());
    };
    // Kept per day, ISO week and month, so a range is answered from a
    // handful of buckets (see `reports::buckets`).
    let date = keys::utc_date(at);
    let buckets = [
        ("d", keys::day(date)),
        ("w", keys::week(date)),
        ("m", keys::month(date)),
    ];
    for (granularity, period) in &buckets {
        match layout::action_index(name) {
            Some(index) => {
                overlay.add(key("r", &[granularity, period, &resource]), &[(index, 1)])?
            }
            None => overlay.add(
                key("rx", &[granularity, period, &resource, name]),
                &[(0, 1)],
            )?,
        }
    }
    Ok(())
}

fn advance_funnels(
    overlay: &mut Overlay<'_>,
    config: &AnalyticsConfig,
    actor: &str,
    at: Timestamp,
    name: &str,
) -> Result<(), AnalyticsError> {
    for funnel in &config.funnels {
        if !funnel.steps.iter().any(|step| step == name) {
            continue;
        }
        let pass_key = key("afu", &[actor, &funnel.name]);
        let pass: Option<FunnelPass> = overlay.get_json(&pass_key)?;
        let window =
            jiff::SignedDuration::try_from(funnel.window).unwrap_or(jiff::SignedDuration::MAX);
        let open = pass.filter(|pass| {
            pass.step + 1 < funnel.steps.len() && at.duration_since(pass.entered_at) <= window
        });
        match open {
            Some(mut pass) if funnel.steps[pass.step + 1] == name && at >= pass.entered_at => {
                pass.step += 1;
                overlay.add(
                    key("f", &[&funnel.name, &pass.entry_day]),
                    &[(pass.step, 1)],
                )?;
                overlay.put_json(pass_key, &pass)?;
            }
            Some(_) => {}
            None if funnel.steps[0] == name => {
                let pass = FunnelPass {
                    step: 0,
                    entered_at: at,
                    entry_day: keys::day(keys::utc_date(at)),
                };
                overlay.add(key("f", &[&funnel.name, &pass.entry_day]), &[(0, 1)])?;
                overlay.put_json(pass_key, &pass)?;
            }
            None => {}
        }
    }
    Ok(())
}

/// Puts an activity event in a session: the actor's open one if it is
/// recent enough, else a new inferred one (ending the stale one by
/// inactivity). Returns whether the session is new to the event's day,
/// week and month (`OpenSession::counted_day` remembers the last day it
/// was counted in; events come in order per actor, so a later day is a
/// new day, and a new week or month when its week or month differs).
fn touch_session(
    overlay: &mut Overlay<'_>,
    context: &Context<'_>,
    actor: &str,
    at: Timestamp,
) -> Result<[bool; 3], AnalyticsError> {
    let open_key = key("as", &[actor]);
    let timeout = jiff::SignedDuration::try_from(context.config.session_timeout)
        .unwrap_or(jiff::SignedDuration::MAX);
    let live = overlay
        .get_json::<OpenSession>(&open_key)?
        .filter(|open| at.duration_since(open.last) <= timeout);
    let mut open = match live {
        Some(mut open) => {
            open.events += 1;
            if at > open.last {
                add_time_spent(overlay, actor, at.duration_since(open.last))?;
                open.last = at;
            }
            open
        }
        None => start_session(overlay, context, actor, at, None)?,
    };
    let day = keys::utc_date(at);
    let new = match open.counted_day {
        Some(counted) if counted >= day => [false; 3],
        Some(counted) => [
            true,
            keys::week(counted) != keys::week(day),
            keys::month(counted) != keys::month(day),
        ],
        None => [true; 3],
    };
    if new[0] {
        open.counted_day = Some(day);
    }
    overlay.put_json(open_key, &open)?;
    Ok(new)
}

/// Starts a session (ending an open one first: by `replaced` when a
/// session call starts the new one, else by inactivity). Returns it as
/// stored.
fn start_session(
    overlay: &mut Overlay<'_>,
    context: &Context<'_>,
    actor: &str,
    at: Timestamp,
    explicit: Option<&String>,
) -> Result<OpenSession, AnalyticsError> {
    let open_key = key("as", &[actor]);
    let timeout = jiff::SignedDuration::try_from(context.config.session_timeout)
        .unwrap_or(jiff::SignedDuration::MAX);
    if let Some(open) = overlay.get_json::<OpenSession>(&open_key)? {
        // A start call while the last session is still live replaces it;
        // one after the timeout finds it over already.
        let live = at.duration_since(open.last) <= timeout;
        let reason = if explicit.is_some() && live {
            "replaced"
        } else {
            "inactivity"
        };
        let end = open.last;
        close_session(overlay, actor, open, end, reason)?;
    }
    let session = match explicit {
        Some(id) => id.clone(),
        None => format!("inferred-{}", context.db.generate_id()?),
    };
    let open = OpenSession {
        key: session,
        start: at,
        last: at,
        events: u64::from(explicit.is_none()),
        explicit: explicit.is_some(),
        counted_day: None,
    };
    overlay.put_json(open_key, &open)?;
    let day = keys::day(keys::utc_date(at));
    overlay.add(key("se", &[&day]), &[(sessions::STARTED, 1)])?;
    overlay.add(layout::profile_key(actor), &[(profile::SESSIONS, 1)])?;
    Ok(open)
}

/// A session end call: ends the actor's open session if it is the one
/// named (an end for another or no session changes nothing).
fn end_session(
    overlay: &mut Overlay<'_>,
    actor: &str,
    at: Timestamp,
    session_id: &str,
) -> Result<(), AnalyticsError> {
    let open_key = key("as", &[actor]);
    let Some(open) = overlay.get_json::<OpenSession>(&open_key)? else {
        return Ok(());
    };
    if open.key != session_id {
        return Ok(());
    }
    let end = at.max(open.last);
    if end > open.last {
        add_time_spent(overlay, actor, end.duration_since(open.last))?;
    }
    close_session(overlay, actor, open, end, "ended")
}

/// Moves an open session to the ended ones and counts it.
pub fn close_session(
    overlay: &mut Overlay<'_>,
    actor: &str,
    open: OpenSession,
    end: Timestamp,
    reason: &str,
) -> Result<(), AnalyticsError> {
    overlay.remove(key("as", &[actor]));
    let start_ms = format!("{:020}", ms(open.start).max(0));
    let day = keys::day(keys::utc_date(open.start));
    let duration = end.duration_since(open.start).as_millis().max(0) as i64;
    let record_key = key("ax", &[actor, &start_ms, &open.key]);
    let record = SessionRecord {
        key: open.key,
        start: open.start,
        end,
        end_reason: reason.to_owned(),
        events: open.events,
    };
    overlay.put_json(record_key, &record)?;
    overlay.add(
        key("se", &[&day]),
        &[(sessions::ENDED, 1), (sessions::DURATION_MS, duration)],
    )?;
    Ok(())
}

fn add_time_spent(
    overlay: &mut Overlay<'_>,
    actor: &str,
    spent: jiff::SignedDuration,
) -> Result<(), AnalyticsError> {
    let spent = spent.as_millis().max(0) as i64;
    overlay.add(
        layout::profile_key(actor),
        &[(profile::TIME_SPENT_MS, spent)],
    )
}
