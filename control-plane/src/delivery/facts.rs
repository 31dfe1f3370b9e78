//! Delivery facts: what analytics needs to know about each delivery's
//! life (sent, delivered, opened, …), written to the `delivery_facts`
//! table **in the same transaction** as the status change they describe
//! (see [`crate::storage::DeliveryTable::edit`]), and drained by the
//! analytics rollups (`crate::analytics`). So a fact is never lost in a
//! crash between the change and the count; analytics records which facts
//! it counted in the transaction that counts them, and removes them from
//! the table only after that commit, so none is counted twice.
//!
//! A fact is emitted only when something changed: a repeated provider
//! callback or a second click emits nothing. Facts are numbered in
//! insertion order so the log drains roughly oldest first; order between
//! facts of one delivery is not relied on (each kind counts once).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::model::Delivery;
use crate::channels::ChannelKind;
use crate::money::Money;

/// What happened to a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactKind {
    /// The provider accepted it (carries the cost).
    Sent,
    /// Confirmed delivered (a callback, engagement, or accepted-is-delivered
    /// channels like in-app).
    Delivered,
    Opened,
    Read,
    Clicked,
    /// Failed for good (permanent error, invalid recipient, or reported
    /// undeliverable after it was sent).
    Failed,
    /// An email's hard bounce (also a failure; counted apart).
    Bounced,
    DeadLettered,
    /// An attempt failed and another is scheduled.
    Retried,
    /// A spam complaint.
    Complained,
}

impl FactKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FactKind::Sent => "sent",
            FactKind::Delivered => "delivered",
            FactKind::Opened => "opened",
            FactKind::Read => "read",
            FactKind::Clicked => "clicked",
            FactKind::Failed => "failed",
            FactKind::Bounced => "bounced",
            FactKind::DeadLettered => "dead_lettered",
            FactKind::Retried => "retried",
            FactKind::Complained => "complained",
        }
    }
}

/// One fact, with the delivery's dimensions copied in so analytics never
/// has to load the delivery (which retention may have removed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryFact {
    pub kind: FactKind,
    /// When it happened.
    pub at: Timestamp,
    pub delivery_id: Uuid,
    pub notification_id: String,
    pub user_id: String,
    pub notification_type: String,
    pub channel: ChannelKind,
    /// The template it was rendered with; `None` for a notify that gave
    /// its title and body as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The delivery's creation: rollups count every fact of a delivery in
    /// the hour it was created (a cohort), so rates stay within 0..=1.
    pub created_at: Timestamp,
    /// When it first became due (after quiet hours): time to deliver is
    /// measured from here.
    pub due_at: Timestamp,
    /// When the provider accepted it: time to read and to click are
    /// measured from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<Timestamp>,
    /// The per-send cost override of the notify, if any (on `Sent` facts
    /// analytics uses it instead of the configured cost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Money>,
}

impl DeliveryFact {
    /// The fact `kind` about `delivery` as it is after the change, at `at`.
    pub fn of(delivery: &Delivery, kind: FactKind, at: Timestamp) -> Self {
        DeliveryFact {
            kind,
            at,
            delivery_id: delivery.id,
            notification_id: delivery.notification_id.clone(),
            user_id: delivery.user_id.clone(),
            notification_type: delivery.message.notification_type.clone(),
            channel: delivery.channel,
            template: delivery.template.clone(),
            created_at: delivery.created_at,
            due_at: delivery.first_due_at,
            sent_at: delivery.sent_at,
            cost: delivery.cost,
        }
    }
}
