//! Digests in the engine: a notification whose frequency is hourly, daily
//! or weekly is held as an item of the user's digest for that type and
//! channel (see [`crate::digest`]); when the digest's time comes, its items
//! become one notification with one message, rendered by the type's digest
//! template (or the built-in one), and are then forgotten.
//!
//! The digest is a notification of its own (type = the items' type, source
//! `digest:…`), so the inbox, status API and delivery log treat it like any
//! other; its data lists the notifications it summarises. It is delivered
//! at its time as is: preferences and quiet hours were applied when its
//! time was chosen, so it is not planned again.
//!
//! A digest goes out [`DIGEST_SETTLE`] after its time, not at it: the
//! timers run beside the feed (on one replica, the feed on all), so an
//! item planned at the last moment must have committed before the digest
//! is read; otherwise it would be folded into a digest already sent.
//!
//! A digest never loses its items to a template: if the digest template
//! fails on this data, a plain list of the items' subjects goes out and
//! the error is logged.

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::{Engine, EngineError, PlanError};
use crate::channels::ChannelKind;
use crate::digest::{DigestItem, DigestKey, DueDigest};
use crate::event::{NotifyRequest, Priority};
use crate::notifications::{Created, NewNotification, Notification};
use crate::templates::Rendered;

/// Digests sent per pass.
const DUE_PAGE: usize = 64;
/// How long after its time a digest goes out: far longer than planning an
/// event takes, so items held for it have committed (see
/// [`Engine::fire_due_digests`]).
pub const DIGEST_SETTLE: std::time::Duration = std::time::Duration::from_secs(5);

impl Engine {
    /// Holds `notification` for its digest on `channel` at `at`.
    pub(super) async fn hold_for_digest(
        &self,
        notification: &Notification,
        channel: ChannelKind,
        at: Timestamp,
        user: &Value,
    ) -> Result<(), EngineError> {
        // Rendered alone now, so the digest can list each item's title
        // with the data it had; a type without templates still has its
        // notify's title and body.
        let rendered = self
            .render(notification, channel, user)
            .map(|(rendered, _)| rendered)
            .unwrap_or_else(|error| {
                tracing::debug!(notification = %notification.id, %channel, %error, "digest item has no rendering of its own");
                Rendered::default()
            });
        let item = DigestItem {
            notification_id: notification.id.clone(),
            created_at: notification.created_at,
            subject: rendered.subject,
            title: rendered.title,
            text: rendered.text,
            data: Value::Object(notification.request.data.clone()),
        };
        let group = self
            .settings
            .current()
            .digest_keys
            .get(&notification.request.notification_type)
            .map(|path| crate::digest::group_of(&notification.request.data, path))
            .unwrap_or_default();
        let key = DigestKey {
            due_at: at,
            user_id: notification.user_id.clone(),
            notification_type: notification.request.notification_type.clone(),
            channel,
            group,
        };
        if self.digests.add(&key, &item).await? {
            tracing::debug!(notification = %notification.id, %channel, %at, "held for the digest");
        } else {
            // Planned again (a resend, a replay): in its digest already.
            tracing::debug!(notification = %notification.id, %channel, "already folded into a digest");
        }
        Ok(())
    }

    /// Sends every digest that is due; returns how many. Public for tests
    /// that drive the engine step by step.
    pub async fn fire_due_digests(&self) -> Result<usize, EngineError> {
        let now = self.clock.now();
        // Only digests due a moment ago: an item whose time was chosen just
        // before the digest's time (by this replica's feed or another's)
        // has committed by then, so it is not left behind in a digest that
        // already went out.
        let settled = now - jiff::SignedDuration::try_from(DIGEST_SETTLE).unwrap_or_default();
        let due = self.digests.due(settled, DUE_PAGE).await?;
        for digest in &due {
            self.send_digest(digest, now).await?;
            self.digests.remove(digest).await?;
        }
        Ok(due.len())
    }

    async fn send_digest(&self, digest: &DueDigest, now: Timestamp) -> Result<(), EngineError> {
        let key = &digest.key;
        // With the preferences' zone: times in the digest's templates read
        // in the zone it is sent by.
        let (user, _) = self.user_and_preferences(&key.user_id).await?;
        let rendered = self.render_digest(digest, &user);
        let ids: Vec<&str> = digest
            .items
            .iter()
            .map(|item| item.notification_id.as_str())
            .collect();
        let mut data = Map::new();
        data.insert(
            "digest".into(),
            json!({
                "count": digest.items.len(),
                "notification_ids": ids,
                "due_at": key.due_at,
                "group": key.group,
            }),
        );
        let draft = NewNotification {
            user_id: key.user_id.clone(),
            request: NotifyRequest {
                notification_type: key.notification_type.clone(),
                template: None,
                title: Some(if rendered.title.is_empty() {
                    rendered.subject.clone()
                } else {
                    rendered.title.clone()
                }),
                body: Some(rendered.text.clone()),
                channels: vec![key.channel],
                data,
                priority: Priority::Normal,
                idempotency_key: None,
                cost: None,
            },
            source_event_id: Some(key.source_id()),
        };
        let notification = match self.notifications.create(draft, now).await? {
            Created::New(notification) => {
                self.created.with_label_values(&["digest"]).inc();
                notification
            }
            Created::Existing(notification) => notification,
            // Erased since the items were held: the erasure removes them.
            Created::UserErased => return Ok(()),
        };
        // Every digest of a type is one template in analytics, whether the
        // type's digest template or the built-in list rendered it.
        let template = Some(format!("{}:digest", key.notification_type));
        let planned = self
            .rendered_deliveries(
                &notification,
                key.channel,
                (rendered, template),
                &user,
                None,
                now,
            )
            .await;
        match planned {
            Ok(deliveries) => {
                // Ids already there (a replayed digest) are kept as they are.
                self.queue.enqueue_all(deliveries).await?;
                tracing::info!(notification = %notification.id, channel = %key.channel, items = digest.items.len(), "digest sent");
            }
            Err(PlanError::Devices(error)) => return Err(error.into()),
            Err(reason) => {
                tracing::warn!(notification = %notification.id, channel = %key.channel, %reason, "digest channel skipped");
            }
        }
        Ok(())
    }

    fn render_digest(&self, digest: &DueDigest, user: &Value) -> Rendered {
        let key = &digest.key;
        let items: Vec<Value> = digest
            .items
            .iter()
            .map(|item| serde_json::to_value(item).expect("a digest item serialises"))
            .collect();
        let settings = self.settings.current();
        match settings.templates.render_digest(
            &key.notification_type,
            key.channel,
            &items,
            &key.group,
            user,
        ) {
            Ok(rendered) => rendered,
            Err(error) => {
                tracing::error!(%error, notification_type = %key.notification_type, channel = %key.channel, "digest template failed; sending a plain list");
                plain_digest(digest)
            }
        }
    }
}

/// The fallback digest: a count and each item's subject (or title).
fn plain_digest(digest: &DueDigest) -> Rendered {
    let count = digest.items.len();
    let subject = format!(
        "{count} new {} notification{}",
        digest.key.notification_type,
        if count == 1 { "" } else { "s" }
    );
    let lines: Vec<String> = digest
        .items
        .iter()
        .map(|item| {
            let line = if item.subject.is_empty() {
                &item.title
            } else {
                &item.subject
            };
            format!("- {line}")
        })
        .collect();
    Rendered {
        title: subject.clone(),
        subject,
        text: lines.join("\n"),
        html: String::new(),
    }
}
