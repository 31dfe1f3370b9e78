//! Folding one delivery fact (`crate::delivery::facts`) into the delivery
//! rollups: per creation hour and day, type and channel (`dh`, `dd`), per
//! template (`td`) and per user (`adl`). Every fact of a delivery counts
//! in the hour it was created (its cohort), so `delivered / sent` is the
//! share of that hour's messages that arrived, whenever they did.
//!
//! Times: to deliver from when it became due to delivered, to read (open
//! or inbox read) and to click from when the provider accepted it.

use super::AnalyticsError;
use super::activity::Context;
use super::attribution::{self, template_name};
use super::config::provider_of;
use super::keys::{self, key, user_actor};
use super::layout::delivery::{self as d, Time};
use super::overlay::Overlay;
use crate::delivery::{DeliveryFact, FactKind};

pub fn fold(
    overlay: &mut Overlay<'_>,
    context: &Context<'_>,
    fact: &DeliveryFact,
) -> Result<(), AnalyticsError> {
    let since = |from: jiff::Timestamp| fact.at.duration_since(from).as_millis().max(0) as i64;
    let sent_at = fact.sent_at.unwrap_or(fact.due_at);
    let channel = fact.channel.as_str();
    let mut deltas: Vec<(usize, i64)> = Vec::with_capacity(4);
    match fact.kind {
        FactKind::Sent => {
            let cost = fact
                .cost
                .unwrap_or_else(|| context.config.cost_of(fact.channel));
            deltas.extend([(d::SENT, 1), (d::COST, cost.micros())]);
            context
                .metrics
                .cost(channel, provider_of(fact.channel), cost.as_f64());
        }
        FactKind::Delivered => {
            deltas.push((d::DELIVERED, 1));
            deltas.extend(d::time_deltas(Time::Deliver, since(fact.due_at)));
        }
        FactKind::Opened | FactKind::Read => {
            deltas.push((
                if fact.kind == FactKind::Opened {
                    d::OPENED
                } else {
                    d::READ
                },
                1,
            ));
            deltas.extend(d::time_deltas(Time::Read, since(sent_at)));
        }
        FactKind::Clicked => {
            deltas.push((d::CLICKED, 1));
            deltas.extend(d::time_deltas(Time::Click, since(sent_at)));
        }
        FactKind::Failed => {
            deltas.push((d::FAILED, 1));
            if fact.sent_at.is_none() {
                deltas.push((d::FAILED_UNSENT, 1));
            }
        }
        FactKind::Bounced => deltas.push((d::BOUNCED, 1)),
        FactKind::DeadLettered => deltas.push((d::DEAD_LETTERED, 1)),
        FactKind::Retried => deltas.push((d::RETRIED, 1)),
        FactKind::Complained => deltas.push((d::COMPLAINED, 1)),
    }
    let kind = fact.notification_type.as_str();
    let day = keys::day(keys::utc_date(fact.created_at));
    let actor = user_actor(&fact.user_id);
    let template = template_name(fact.template.as_deref());
    overlay.add(
        key("dh", &[&keys::hour(fact.created_at), kind, channel]),
        &deltas,
    )?;
    overlay.add(key("dd", &[&day, kind, channel]), &deltas)?;
    overlay.add(key("td", &[&day, &template, kind, channel]), &deltas)?;
    overlay.add(key("adl", &[&actor, &day, kind, channel]), &deltas)?;
    if matches!(
        fact.kind,
        FactKind::Opened | FactKind::Read | FactKind::Clicked
    ) {
        context.metrics.engagement(channel, fact.kind.as_str());
        attribution::touch(overlay, &actor, fact)?;
    }
    Ok(())
}
