//! The check a workflow step's delivery passes when it comes due: has the
//! user already engaged with the notification in a way that cancels the
//! step ([`crate::delivery::StepGate::unless`])? Read from the stored
//! state, on whichever replica claimed the delivery, so nothing depends on
//! a timer in memory.
//!
//! What counts, over every other delivery of the same notification:
//!
//! * `read`: the delivery's `read_at`, or, for an in-app delivery, its
//!   inbox item read or archived (the inbox is where a user reads; marking
//!   everything read does not touch the deliveries, so the item is asked);
//! * `opened`: the delivery's `opened_at` (an email's open pixel, a
//!   provider's open report);
//! * `clicked`: the delivery's `clicked_at` (a tracked link, a provider).

use jiff::Timestamp;

use crate::channels::ChannelKind;
use crate::delivery::{Delivery, DeliveryQueue, Engagement, SendVerdict};
use crate::inbox::InboxStore;

/// Whether `delivery`'s step goes out, and why (written to its attempt
/// log). A delivery without a gate always proceeds.
pub async fn verdict(
    queue: &DeliveryQueue,
    inbox: &InboxStore,
    delivery: &Delivery,
) -> Result<SendVerdict, String> {
    let Some(gate) = &delivery.step else {
        return Ok(SendVerdict::Proceed(String::new()));
    };
    let notification = uuid::Uuid::parse_str(&delivery.notification_id)
        .map_err(|error| format!("notification id {:?}: {error}", delivery.notification_id))?;
    let siblings = queue
        .for_notification(notification)
        .await
        .map_err(|error| error.to_string())?;
    let mut seen: Option<(Timestamp, Engagement, ChannelKind)> = None;
    for sibling in siblings.iter().filter(|sibling| sibling.id != delivery.id) {
        for &kind in &gate.unless {
            let at = match kind {
                Engagement::Opened => sibling.opened_at,
                Engagement::Clicked => sibling.clicked_at,
                Engagement::Read => match sibling.read_at {
                    Some(at) => Some(at),
                    None => inbox_read_at(inbox, sibling).await?,
                },
            };
            if let Some(at) = at
                && seen.is_none_or(|(first, _, _)| at < first)
            {
                seen = Some((at, kind, sibling.channel));
            }
        }
    }
    let step = gate.step;
    Ok(match seen {
        Some((at, kind, channel)) => SendVerdict::Skip(format!(
            "step {step} cancelled: the {channel} message was {} at {at}",
            kind.as_str()
        )),
        None => {
            let kinds: Vec<&str> = gate.unless.iter().map(|kind| kind.as_str()).collect();
            SendVerdict::Proceed(format!(
                "step {step}: nothing {} yet; sending",
                kinds.join(" or ")
            ))
        }
    })
}

/// When an in-app delivery's inbox item was read (or archived, which a
/// user does with what they have dealt with).
async fn inbox_read_at(
    inbox: &InboxStore,
    delivery: &Delivery,
) -> Result<Option<Timestamp>, String> {
    if delivery.channel != ChannelKind::InApp || delivery.sent_at.is_none() {
        return Ok(None);
    }
    let item = inbox
        .get(&delivery.user_id, &delivery.id.to_string())
        .await
        .map_err(|error| error.to_string())?;
    Ok(
        item.and_then(|item| match (item.read_at, item.archived_at) {
            (Some(read), Some(archived)) => Some(read.min(archived)),
            (read, archived) => read.or(archived),
        }),
    )
}
