//! The last look before a send: a delivery that was planned for later can
//! have become needless meanwhile. The dispatcher runs this check on
//! whichever replica claims such a delivery ([`crate::delivery::dispatcher::needs_check`]):
//!
//! * a **broadcast's held delivery** (quiet hours, a workflow's wait) of a
//!   broadcast that was cancelled since: `skipped`, so a cancel recalls
//!   what has not gone out yet;
//! * a **workflow step** the user's engagement made needless (see
//!   [`crate::workflow::gate`]): `skipped`, or `proceeded` with what was
//!   checked.
//!
//! Everything is read from the database, so the answer holds across
//! replicas and restarts; a failure to read is retried like a failed send.

use std::sync::Arc;

use futures::FutureExt;

use crate::broadcasts::BroadcastState;
use crate::delivery::{Delivery, DeliveryQueue, SendCheck, SendVerdict};
use crate::inbox::InboxStore;
use crate::storage::BroadcastTable;
use crate::workflow::gate;

/// The dispatcher's [`SendCheck`] over the deliveries, the inbox and the
/// broadcasts.
pub fn checker(queue: DeliveryQueue, inbox: InboxStore, broadcasts: BroadcastTable) -> SendCheck {
    Arc::new(move |delivery: &Delivery| {
        let (queue, inbox, broadcasts) = (queue.clone(), inbox.clone(), broadcasts.clone());
        let delivery = delivery.clone();
        async move {
            if let Some(reason) = cancelled_broadcast(&broadcasts, &delivery).await? {
                return Ok(SendVerdict::Skip(reason));
            }
            gate::verdict(&queue, &inbox, &delivery).await
        }
        .boxed()
    })
}

/// Why `delivery` no longer goes out because its broadcast was cancelled,
/// if it was.
async fn cancelled_broadcast(
    broadcasts: &BroadcastTable,
    delivery: &Delivery,
) -> Result<Option<String>, String> {
    let Some(id) = &delivery.broadcast else {
        return Ok(None);
    };
    let broadcast = broadcasts
        .get(id)
        .await
        .map_err(|error| error.to_string())?;
    Ok(broadcast
        .filter(|broadcast| broadcast.state == BroadcastState::Cancelled)
        .map(|broadcast| match broadcast.finished_at {
            Some(at) => format!("broadcast {id:?} was cancelled at {at}"),
            None => format!("broadcast {id:?} was cancelled"),
        }))
}
