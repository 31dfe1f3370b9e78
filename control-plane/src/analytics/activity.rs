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

use super::actor::ActorState;
use super::config::{AnalyticsConfig, span};
use super::keys::{self, key};
use super::layout::{self, profile, sessions, summary};
use super::overlay::Overlay;
use super::{AnalyticsError, attribution, identity};
use crate::event::{Event, EventBody, JsonObject};

/// An actor's open session (in its record; `as` marks that it has one).
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

/// An actor's pass through a funnel (in its record).
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
    let (name, properties) = match &event.body {
        EventBody::SessionStart { session_id, .. } => {
            let mut state = overlay.take_actor(&actor)?.unwrap_or_else(ActorState::new);
            start_session(overlay, context, &actor, &mut state, at, Some(session_id))?;
            return overlay.put_actor(&actor, state);
        }
        EventBody::SessionEnd { session_id, .. } => {
            let Some(mut state) = overlay.take_actor(&actor)? else {
                return Ok(());
            };
            end_session(overlay, &actor, &mut state, at, session_id)?;
            return overlay.put_actor(&actor, state);
        }
        EventBody::Track {
            event: name,
            properties,
        } => (name.clone(), properties),
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
            (label, properties)
        }
        EventBody::Identify { .. }
        | EventBody::Alias { .. }
        | EventBody::Group { .. }
        | EventBody::Notify(_) => return Ok(()),
    };
    // Only track calls name resources, move funnels and report outcomes.
    let track = matches!(event.body, EventBody::Track { .. });
    let mut state = overlay.take_actor(&actor)?.unwrap_or_else(ActorState::new);
    let new_session = touch_session(overlay, context, &actor, &mut state, at)?;
    count_activity(
        overlay,
        &mut state,
        new_session,
        at,
        &name,
        feature(properties),
    )?;
    if track {
        count_resource(overlay, context.config, at, &name, properties)?;
        advance_funnels(overlay, context.config, &mut state, at, &name)?;
    }
    overlay.put_actor(&actor, state)?;
    if track && context.config.outcome_events.contains(&name) {
        attribution::outcome(overlay, context, &actor, at, &name, properties)?;
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
/// Unique users need no membership sets: an actor is new in a day, week
/// or month when none of its active days falls in it (see
/// [`ActorState::mark_day`]). Sessions likewise (see [`touch_session`]).
fn count_activity(
    overlay: &mut Overlay<'_>,
    state: &mut ActorState,
    new_session: [bool; 3],
    at: Timestamp,
    name: &str,
    feature: Option<&str>,
) -> Result<(), AnalyticsError> {
    let date = keys::utc_date(at);
    let new_user = state.mark_day(date);
    let periods = [keys::day(date), keys::week(date), keys::month(date)];
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
    let profile = &mut state.profile;
    profile[profile::EVENTS] += 1;
    if profile[profile::FIRST_SEEN_MS] == 0 || ms(at) < profile[profile::FIRST_SEEN_MS] {
        profile[profile::FIRST_SEEN_MS] = ms(at);
    }
    profile[profile::LAST_SEEN_MS] = profile[profile::LAST_SEEN_MS].max(ms(at));
    // Events by name: [count, of which with a `feature` property]; the
    // features of those are counted apart.
    let by_name = state.detail.events.entry(name.to_owned()).or_default();
    by_name[0] += 1;
    if let Some(feature) = feature {
        by_name[1] += 1;
        *state.detail.features.entry(feature.to_owned()).or_default() += 1;
    }
    Ok(())
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
    state: &mut ActorState,
    at: Timestamp,
    name: &str,
) -> Result<(), AnalyticsError> {
    for funnel in &config.funnels {
        if !funnel.steps.iter().any(|step| step == name) {
            continue;
        }
        let window = span(funnel.window);
        let passes = &mut state.detail.funnels;
        let open = passes.get_mut(&funnel.name).filter(|pass| {
            pass.step + 1 < funnel.steps.len() && at.duration_since(pass.entered_at) <= window
        });
        match open {
            Some(pass) if funnel.steps[pass.step + 1] == name && at >= pass.entered_at => {
                pass.step += 1;
                overlay.add(
                    key("f", &[&funnel.name, &pass.entry_day]),
                    &[(pass.step, 1)],
                )?;
            }
            Some(_) => {}
            None if funnel.steps[0] == name => {
                let pass = FunnelPass {
                    step: 0,
                    entered_at: at,
                    entry_day: keys::day(keys::utc_date(at)),
                };
                overlay.add(key("f", &[&funnel.name, &pass.entry_day]), &[(0, 1)])?;
                passes.insert(funnel.name.clone(), pass);
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
    state: &mut ActorState,
    at: Timestamp,
) -> Result<[bool; 3], AnalyticsError> {
    let timeout = span(context.config.session_timeout);
    let live = state
        .detail
        .open_session
        .as_ref()
        .is_some_and(|open| at.duration_since(open.last) <= timeout);
    if !live {
        start_session(overlay, context, actor, state, at, None)?;
    }
    let Some(open) = state.detail.open_session.as_mut() else {
        return Err(AnalyticsError::Corrupt(
            "a started session is not open".to_owned(),
        ));
    };
    let mut spent = 0;
    if live {
        open.events += 1;
        if at > open.last {
            spent = at.duration_since(open.last).as_millis().max(0) as i64;
            open.last = at;
        }
    }
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
    state.profile[profile::TIME_SPENT_MS] += spent;
    Ok(new)
}

/// Starts a session (ending an open one first: by `replaced` when a
/// session call starts the new one, else by inactivity).
fn start_session(
    overlay: &mut Overlay<'_>,
    context: &Context<'_>,
    actor: &str,
    state: &mut ActorState,
    at: Timestamp,
    explicit: Option<&String>,
) -> Result<(), AnalyticsError> {
    if let Some(open) = state.detail.open_session.take() {
        // A start call while the last session is still live replaces it;
        // one after the timeout finds it over already.
        let live = at.duration_since(open.last) <= span(context.config.session_timeout);
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
        None => format!(
            "inferred-{}",
            overlay.increment(layout::SESSION_IDS.to_vec())?
        ),
    };
    state.detail.open_session = Some(OpenSession {
        key: session,
        start: at,
        last: at,
        events: u64::from(explicit.is_none()),
        explicit: explicit.is_some(),
        counted_day: None,
    });
    let day = keys::day(keys::utc_date(at));
    overlay.add(key("se", &[&day]), &[(sessions::STARTED, 1)])?;
    state.profile[profile::SESSIONS] += 1;
    Ok(())
}

/// A session end call: ends the actor's open session if it is the one
/// named (an end for another or no session changes nothing).
fn end_session(
    overlay: &mut Overlay<'_>,
    actor: &str,
    state: &mut ActorState,
    at: Timestamp,
    session_id: &str,
) -> Result<(), AnalyticsError> {
    let Some(open) = state
        .detail
        .open_session
        .take_if(|open| open.key == session_id)
    else {
        return Ok(());
    };
    let end = at.max(open.last);
    state.profile[profile::TIME_SPENT_MS] +=
        end.duration_since(open.last).as_millis().max(0) as i64;
    close_session(overlay, actor, open, end, "ended")
}

/// Records a session that ended (the caller has taken it out of the
/// actor's record) and counts it.
pub fn close_session(
    overlay: &mut Overlay<'_>,
    actor: &str,
    open: OpenSession,
    end: Timestamp,
    reason: &str,
) -> Result<(), AnalyticsError> {
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
