//! The fan-out of broadcasts (see [`crate::broadcasts`]) and the
//! subscription rules applied to tracked events.
//!
//! The replica that holds the timers' lease fans out one page of a due
//! broadcast per pass, the due broadcasts taking turns ([`next_in_turn`]:
//! a large one does not hold back the next for its whole fan-out):
//! [`FAN_OUT_PAGE`] users of its audience after its cursor, in user id
//! order; each user in the audience gets a
//! notification (source id `broadcast:<id>:<user>`), and the page's
//! notifications are created in one transaction and their deliveries
//! enqueued in another, like a page of notifies. Then the page's progress
//! is recorded. A crash between the two replans the page: nothing is
//! created twice, deliveries already queued are kept, and throttles read
//! their first decision back.

use jiff::Timestamp;

use super::{Engine, EngineError};
use crate::broadcasts::rules::SubscriptionAction;
use crate::broadcasts::{Audience, Broadcast, source_id};
use crate::event::JsonObject;
use crate::notifications::NewNotification;
use crate::storage::{PageDone, Subscribed};

/// Users looked at per page of a fan-out.
pub const FAN_OUT_PAGE: usize = 500;
/// Due broadcasts taking turns at most; more wait for a turn among the
/// first ones (due first first).
const FAN_OUT_TURNS: usize = 64;

/// Of `due` (due first first), the broadcast after `last` in that order,
/// wrapping around: each due broadcast gets a page in turn. The first when
/// `last` is none or no longer due.
fn next_in_turn(mut due: Vec<Broadcast>, last: Option<&str>) -> Option<Broadcast> {
    let after = last
        .and_then(|last| due.iter().position(|broadcast| broadcast.id == last))
        .map_or(0, |index| index + 1);
    if after < due.len() {
        Some(due.swap_remove(after))
    } else {
        due.into_iter().next()
    }
}

impl Engine {
    /// Fans out every broadcast due now, page by page; returns how many
    /// pages. Exposed for tests that drive the engine step by step (the
    /// running engine does one page per pass, see `Engine::run`).
    pub async fn fan_out_due(&self) -> Result<usize, EngineError> {
        let mut pages = 0;
        while self.fan_out_step().await? > 0 {
            pages += 1;
        }
        Ok(pages)
    }

    /// Fans out one page of the due broadcast whose turn it is, if any;
    /// returns how many users it looked at (0: nothing due). Public for
    /// tests that watch the turns.
    pub async fn fan_out_step(&self) -> Result<usize, EngineError> {
        let now = self.clock.now();
        let due = self.broadcasts.due(now, FAN_OUT_TURNS).await?;
        let last = self
            .fan_out_turn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let Some(broadcast) = next_in_turn(due, last.as_deref()) else {
            return Ok(0);
        };
        *self
            .fan_out_turn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(broadcast.id.clone());
        let (scanned, last_id, recipients) = self.audience_page(&broadcast, now).await?;
        let drafts: Vec<NewNotification> = recipients
            .iter()
            .map(|user| NewNotification {
                user_id: user.clone(),
                request: broadcast.spec.request.clone(),
                source_event_id: Some(source_id(&broadcast.id, user)),
            })
            .collect();
        let notifications = self.plan_recipients(&broadcast.id, drafts).await?;
        let page = PageDone {
            from: broadcast.cursor.clone(),
            to: last_id,
            scanned: scanned as u64,
            recipients: recipients.len() as u64,
            notifications,
            last: scanned < FAN_OUT_PAGE,
        };
        let recorded = self
            .broadcasts
            .record_page(&broadcast.id, &page, now)
            .await?;
        if !recorded {
            tracing::info!(broadcast = %broadcast.id, "broadcast changed while a page was planned (cancelled, or planned elsewhere)");
        } else if page.last {
            tracing::info!(broadcast = %broadcast.id, recipients = broadcast.recipients + page.recipients, "broadcast fanned out");
        }
        // A last page with no one left still did work: it closed the
        // broadcast, and another may be due.
        Ok(scanned.max(1))
    }

    /// Plans a page of a broadcast's drafts together; when that fails for
    /// good (a corrupt record of one user), one by one, so that only the
    /// users who cannot be planned are skipped (logged and counted in
    /// `nudge_cp_broadcast_recipients_failed_total`) and the broadcast goes
    /// on. Returns how many notifications were created.
    async fn plan_recipients(
        &self,
        broadcast_id: &str,
        drafts: Vec<NewNotification>,
    ) -> Result<u64, EngineError> {
        match self
            .create_and_plan_all(drafts.clone(), "broadcast", Some(broadcast_id))
            .await
        {
            Ok(created) => Ok(created),
            Err(error) if error.is_transient() => Err(error),
            Err(_) => {
                let mut created = 0;
                for draft in drafts {
                    let user = draft.user_id.clone();
                    match self
                        .create_and_plan_all(vec![draft], "broadcast", Some(broadcast_id))
                        .await
                    {
                        Ok(new) => created += new,
                        Err(error) if error.is_transient() => return Err(error),
                        Err(error) => {
                            self.broadcast_failed.inc();
                            tracing::warn!(broadcast = broadcast_id, %user, %error, "broadcast recipient skipped: cannot be planned");
                        }
                    }
                }
                Ok(created)
            }
        }
    }

    /// The next page of `broadcast`'s audience: how many users were looked
    /// at, the last one's id, and those in the audience.
    async fn audience_page(
        &self,
        broadcast: &Broadcast,
        now: Timestamp,
    ) -> Result<(usize, Option<String>, Vec<String>), EngineError> {
        let after = broadcast.cursor.as_deref();
        let (candidates, matching): (Vec<String>, Vec<String>) = match &broadcast.spec.audience {
            Audience::Topic(topic) => {
                let users: Vec<String> = self
                    .topics
                    .subscribers_after(topic, after, FAN_OUT_PAGE)
                    .await?
                    .into_iter()
                    .map(|subscription| subscription.user_id)
                    .collect();
                (users.clone(), users)
            }
            Audience::Segment(segment) => {
                let (candidates, mut matching) = if segment.traits.is_empty() {
                    let users = self.store.users_after(after, FAN_OUT_PAGE).await?;
                    (users.clone(), users)
                } else {
                    let profiles = self.store.profiles_after(after, FAN_OUT_PAGE).await?;
                    let users = profiles.iter().map(|(user, _)| user.clone()).collect();
                    let matching = profiles
                        .into_iter()
                        .filter(|(_, traits)| segment.matches(traits))
                        .map(|(user, _)| user)
                        .collect();
                    (users, matching)
                };
                if let Some(within) = segment.active_within {
                    let since = now.checked_sub(within).unwrap_or(Timestamp::MIN);
                    let names: Vec<&str> = matching.iter().map(String::as_str).collect();
                    let active = self.store.active_since(&names, since).await?;
                    matching.retain(|user| active.contains(user));
                }
                (candidates, matching)
            }
        };
        Ok((candidates.len(), candidates.last().cloned(), matching))
    }

    /// Applies the subscription rules to one tracked event of `user_id`.
    pub(super) async fn apply_subscription_rules(
        &self,
        user_id: &str,
        name: &str,
        properties: &JsonObject,
    ) -> Result<(), EngineError> {
        let settings = self.settings.current();
        for rule in settings.subscriptions.iter().filter(|rule| rule.on == name) {
            let Some(topic) = rule.topic_for(properties) else {
                tracing::debug!(event = name, topic = %rule.topic, "subscription rule: conditions do not hold or no topic name");
                continue;
            };
            match rule.action {
                SubscriptionAction::Subscribe => {
                    let subscribed = self
                        .topics
                        .subscribe(&topic, user_id, self.clock.now())
                        .await?;
                    if subscribed == Subscribed::New {
                        tracing::debug!(user = user_id, %topic, "subscribed by rule");
                    }
                }
                SubscriptionAction::Unsubscribe => {
                    self.topics.unsubscribe(&topic, user_id).await?;
                }
            }
        }
        Ok(())
    }
}
