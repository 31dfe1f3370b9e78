//! Financial outcomes and which notification earned them.
//!
//! Attribution is **last touch**: every open, read or click of a delivery
//! makes it the user's latest touch (`at`); an outcome event (a track
//! event named in `outcome_events`) is attributed to that touch if it
//! came after it and within `attribution_window`, else it is counted as
//! unattributed. An attributed outcome counts once, for the touched
//! delivery's type, channel and template, as a conversion with its amount
//! in that delivery's cohort (the day it was created: costs are counted
//! there too, so cost per conversion compares like with like), and in the
//! outcomes report on the day it happened.
//!
//! An anonymous visitor's outcome is attributed once they are linked to a
//! user (`identity`); before that it is unattributed.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::activity::Context;
use super::keys::{self, key};
use super::layout::delivery as d;
use super::overlay::Overlay;
use super::{AnalyticsError, Money};
use crate::delivery::DeliveryFact;
use crate::event::JsonObject;

/// A user's latest engagement (`at`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Touch {
    pub at: Timestamp,
    pub delivery_id: String,
    pub notification_type: String,
    pub channel: String,
    pub template: String,
    /// The delivery's cohort (creation) day and hour.
    pub day: String,
    pub hour: String,
}

/// Records an engagement fact as the user's latest touch.
pub fn touch(
    overlay: &mut Overlay<'_>,
    actor: &str,
    fact: &DeliveryFact,
) -> Result<(), AnalyticsError> {
    let touch_key = key("at", &[actor]);
    let latest: Option<Touch> = overlay.get_json(&touch_key)?;
    if latest.is_some_and(|latest| latest.at > fact.at) {
        return Ok(());
    }
    let touch = Touch {
        at: fact.at,
        delivery_id: fact.delivery_id.to_string(),
        notification_type: fact.notification_type.clone(),
        channel: fact.channel.as_str().to_owned(),
        template: template_name(fact.template.as_deref()),
        day: keys::day(keys::utc_date(fact.created_at)),
        hour: keys::hour(fact.created_at),
    };
    overlay.put_json(touch_key, &touch)
}

/// How a delivery without a template is grouped in per-template figures.
pub fn template_name(template: Option<&str>) -> String {
    template.unwrap_or("(none)").to_owned()
}

/// The amount of an outcome: its `amount`, `revenue` or `value`
/// property (a number or a decimal string); zero without one. Intake
/// refuses amounts beyond ±[`Money::MAX`]; one stored before that rule (or
/// by another client) is not an amount either, so it cannot push a sum
/// out of range.
pub fn amount_of(properties: &JsonObject) -> Money {
    nudge_proto::validate::AMOUNT_PROPERTIES
        .iter()
        .find_map(|name| match properties.get(*name)? {
            Value::Number(number) => number.as_f64().and_then(Money::from_f64),
            Value::String(text) => text.parse().ok().filter(|money: &Money| money.in_bounds()),
            _ => None,
        })
        .unwrap_or(Money::ZERO)
}

/// Counts an outcome event of `actor` at `at`.
pub fn outcome(
    overlay: &mut Overlay<'_>,
    context: &Context<'_>,
    actor: &str,
    at: Timestamp,
    name: &str,
    properties: &JsonObject,
) -> Result<(), AnalyticsError> {
    let amount = amount_of(properties);
    let day = keys::day(keys::utc_date(at));
    let window = super::config::span(context.config.attribution_window);
    let touch = overlay
        .get_json::<Touch>(&key("at", &[actor]))?
        .filter(|touch| touch.at <= at && at.duration_since(touch.at) <= window);
    let metrics = context.metrics;
    let Some(touch) = touch else {
        overlay.add(
            key("o", &[&day, name, "", "", ""]),
            &[(0, 1), (1, amount.micros())],
        )?;
        metrics.outcome(None, amount.as_f64());
        return Ok(());
    };
    let Touch {
        notification_type: kind,
        channel,
        template,
        ..
    } = &touch;
    overlay.add(
        key("o", &[&day, name, kind, channel, template]),
        &[(0, 1), (1, amount.micros())],
    )?;
    let conversion = [(d::CONVERSIONS, 1), (d::REVENUE, amount.micros())];
    overlay.add(key("dh", &[&touch.hour, kind, channel]), &conversion)?;
    overlay.add(key("dd", &[&touch.day, kind, channel]), &conversion)?;
    overlay.add(
        key("td", &[&touch.day, template, kind, channel]),
        &conversion,
    )?;
    overlay.add(key("adl", &[actor, &touch.day, kind, channel]), &conversion)?;
    metrics.outcome(Some(channel), amount.as_f64());
    Ok(())
}
