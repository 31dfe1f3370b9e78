//! Planning one notification: which channels (preferences), what each
//! message says (templates, or the notify's own title and body), who it goes
//! to (the profile's address, the type's webhook), and when (quiet hours).
//!
//! Emails of non-critical types carry a signed one-click unsubscribe link
//! (RFC 8058) when the operator configured `public_url`; HTML emails also
//! carry an open pixel and click-tracking links, unless `[tracking]`
//! switches them off (see [`crate::links::tracking`]).
//!
//! A channel that cannot be planned — no address for the user, no sender
//! configured, a template that does not render — is skipped with a log line
//! naming the reason; the other channels still go out.

use jiff::Timestamp;
use nudge_proto::contact;
use serde_json::Value;
use uuid::Uuid;

use super::{Engine, EngineError};
use crate::channels::{ChannelKind, OutboundMessage, Recipient};
use crate::delivery::{Delivery, NewDelivery};
use crate::devices::Platform;
use crate::event::{Event, EventBody, NotifyRequest};
use crate::links::UnsubscribeClaims;
use crate::notifications::{Created, NewNotification, Notification};
use crate::preferences::{Action, ChannelDecision, UserPreferences, resolve};
use crate::templates::{RenderInput, Rendered, TemplateError};
use crate::throttle::Decision;
use crate::workflow::{self, PlannedStep};

/// Why one channel of a notification was not planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("the user has no {0} in their profile")]
    NoAddress(&'static str),
    #[error("no webhook URL is configured for this type")]
    NoWebhookUrl,
    #[error("no sender is configured for this channel")]
    ChannelNotConfigured,
    #[error("the user has no active {0} device")]
    NoDevices(ChannelKind),
    #[error(transparent)]
    Devices(#[from] crate::devices::DeviceError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("neither a template nor a title or body to send")]
    NothingToSay,
}

/// The delivery id of `notification`'s delivery on `channel` (to
/// `device_id`, on the push channels): the notification's UUIDv7 with its
/// last four bytes replaced by a digest of the channel and the device.
///
/// * A replayed event maps to the same delivery (the queue refuses it as
///   already there): the id depends on nothing else.
/// * Ids still sort by time, and a notification's deliveries share its
///   first ten bytes (the queue finds them with one prefix scan).
/// * Two notifications never share a delivery id: bytes 6 to 11 hold the
///   UUIDv7 counter that tells notifications of one millisecond apart, and
///   they are kept. (An earlier layout overwrote bytes 10 to 14 with the
///   device, so two pushes to one device within a millisecond got the
///   same id and the second was dropped.) Deliveries of one notification
///   differ unless two of its (channel, device) pairs share a 32-bit
///   digest.
pub fn delivery_id_for(
    notification_id: &str,
    channel: ChannelKind,
    device_id: Option<&str>,
) -> Option<Uuid> {
    use sha2::{Digest, Sha256};
    let mut bytes = *Uuid::parse_str(notification_id).ok()?.as_bytes();
    let mut digest = Sha256::new();
    digest.update(channel.as_str().as_bytes());
    digest.update([0]);
    digest.update(device_id.unwrap_or_default().as_bytes());
    let digest = digest.finalize();
    bytes[12..16].copy_from_slice(&digest[..4]);
    Some(Uuid::from_bytes(bytes))
}

impl Engine {
    /// Processes one ingested event: a `notify`, or a tracked event that
    /// rules may react to.
    pub(super) async fn process(&self, event: &Event) -> Result<(), EngineError> {
        if let EventBody::Track { .. } = &event.body {
            return self.track(event).await;
        }
        let EventBody::Notify(request) = &event.body else {
            return Ok(());
        };
        let Some(user_id) = &event.user_id else {
            tracing::warn!(event = %event.id, "notify without a user id; nothing to send");
            return Ok(());
        };
        self.create_and_plan(new_notification(event, user_id, request), "notify")
            .await
    }

    /// Creates the notification (idempotently) and plans its deliveries.
    /// `trigger` (`notify` or `rule`) labels the created-notifications
    /// counter.
    pub(super) async fn create_and_plan(
        &self,
        draft: NewNotification,
        trigger: &'static str,
    ) -> Result<(), EngineError> {
        let notification = match self.notifications.create(draft, self.clock.now()).await? {
            Created::New(notification) => {
                self.created.with_label_values(&[trigger]).inc();
                notification
            }
            // Planned before, maybe only in part (a crash mid-plan):
            // planning again is safe, deliveries already there are kept.
            Created::Existing(notification) => notification,
            // Erased while the engine held the event: nothing to send.
            Created::UserErased => return Ok(()),
        };
        self.plan(&notification).await
    }

    /// Processes a run of `notify` events: their notifications are created
    /// in one transaction and their deliveries enqueued in another, so a
    /// page of notifies costs two commits, not two per event.
    pub(super) async fn process_notifies(&self, events: &[&Event]) -> Result<(), EngineError> {
        let drafts: Vec<NewNotification> = events
            .iter()
            .filter_map(|event| {
                let EventBody::Notify(request) = &event.body else {
                    return None;
                };
                let Some(user_id) = &event.user_id else {
                    tracing::warn!(event = %event.id, "notify without a user id; nothing to send");
                    return None;
                };
                Some(new_notification(event, user_id, request))
            })
            .collect();
        self.create_and_plan_all(drafts, "notify", None).await?;
        Ok(())
    }

    /// Creates `drafts`' notifications in one transaction and enqueues
    /// their deliveries in another; returns how many notifications were
    /// new (counted under `trigger`). Drafts whose notification exists are
    /// planned again (deliveries already there are kept); erased users'
    /// are skipped. The deliveries of a `broadcast` that are held for
    /// later carry its id, so that cancelling it recalls them (see
    /// [`crate::send_check`]).
    pub(super) async fn create_and_plan_all(
        &self,
        drafts: Vec<NewNotification>,
        trigger: &'static str,
        broadcast: Option<&str>,
    ) -> Result<u64, EngineError> {
        let created = self
            .notifications
            .create_all(drafts, self.clock.now())
            .await?;
        let mut deliveries = Vec::new();
        let mut new = 0;
        // The page's profiles and preferences are read together, two
        // queries a page rather than two round trips a user (a change
        // made while the page is planned applies from the next page).
        let mut users = {
            let ids: Vec<&str> = created
                .iter()
                .filter_map(|created| match created {
                    Created::New(n) | Created::Existing(n) => Some(n.user_id.as_str()),
                    Created::UserErased => None,
                })
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            self.users_and_preferences(&ids).await?
        };
        for created in created {
            let notification = match created {
                Created::New(notification) => {
                    self.created.with_label_values(&[trigger]).inc();
                    new += 1;
                    notification
                }
                // Planned before, maybe only in part: planning again is
                // safe, deliveries already there are kept.
                Created::Existing(notification) => notification,
                Created::UserErased => continue,
            };
            if !users.contains_key(&notification.user_id) {
                let known = self.user_and_preferences(&notification.user_id).await?;
                users.insert(notification.user_id.clone(), known);
            }
            let (user, preferences) = &users[&notification.user_id];
            let planned = self
                .plan_deliveries(&notification, user, preferences)
                .await?;
            deliveries.extend(planned.into_iter().map(|mut delivery| {
                if delivery.not_before > delivery.created_at {
                    delivery.broadcast = broadcast.map(str::to_owned);
                }
                delivery
            }));
        }
        self.queue.enqueue_all(deliveries).await?;
        Ok(new)
    }

    async fn plan(&self, notification: &Notification) -> Result<(), EngineError> {
        let (user, preferences) = self.user_and_preferences(&notification.user_id).await?;
        let deliveries = self
            .plan_deliveries(notification, &user, &preferences)
            .await?;
        // Ids already there (a replayed plan) are kept as they are.
        self.queue.enqueue_all(deliveries).await?;
        Ok(())
    }

    /// The deliveries `notification` gets now under the user's
    /// `preferences` (held digests are stored on the way); the caller
    /// enqueues them.
    async fn plan_deliveries(
        &self,
        notification: &Notification,
        user: &Value,
        preferences: &UserPreferences,
    ) -> Result<Vec<Delivery>, EngineError> {
        let mut planned = Vec::new();
        let now = self.clock.now();
        let decisions = self.decisions(notification, user, preferences, now);
        let throttle = if decisions
            .iter()
            .any(|(d, _)| matches!(d.action, Action::SendNow | Action::HoldUntil(_)))
        {
            self.throttle(notification, now).await?
        } else {
            // Nothing goes out now: nothing to count or hold back.
            Decision::Sent
        };
        for (decision, step) in decisions {
            // Over the type's throttle: what would go out now does not.
            let prompt = matches!(decision.action, Action::SendNow | Action::HoldUntil(_));
            match throttle {
                Decision::Dropped if prompt => continue,
                Decision::Digest { at } if prompt => {
                    // Not during the channel's quiet hours either.
                    let at = match decision.action {
                        Action::HoldUntil(until) => at.max(until),
                        _ => at,
                    };
                    self.hold_for_digest(notification, decision.channel, at, user)
                        .await?;
                    continue;
                }
                _ => {}
            }
            // A workflow step waits for its time (and then quiet hours).
            let step_at = step.as_ref().map(|step| step.at).filter(|at| *at > now);
            let not_before = match decision.action {
                Action::SendNow => step_at,
                Action::HoldUntil(until) => Some(step_at.map_or(until, |at| until.max(at))),
                Action::Digest(at) => {
                    self.hold_for_digest(notification, decision.channel, at, user)
                        .await?;
                    continue;
                }
                Action::Suppressed(reason) => {
                    tracing::info!(notification = %notification.id, channel = %decision.channel, ?reason, "suppressed by preferences");
                    continue;
                }
            };
            let deliveries = self
                .deliveries(notification, decision.channel, user, not_before, now)
                .await;
            match deliveries {
                Ok(deliveries) => planned.extend(deliveries.into_iter().map(|mut delivery| {
                    delivery.step = step.as_ref().and_then(|step| step.gate.clone());
                    delivery
                })),
                // Storage failing is not a reason to skip: retry the event.
                Err(PlanError::Devices(error)) => return Err(error.into()),
                Err(reason) => {
                    tracing::warn!(notification = %notification.id, channel = %decision.channel, %reason, "channel skipped");
                }
            }
        }
        Ok(planned)
    }

    /// What the user's preferences decide for each channel of
    /// `notification`, with the workflow step it belongs to when its type
    /// has steps: each step is resolved at its own time (quiet hours then,
    /// not now). Steps are timed from the notification's creation, so a
    /// replan times them the same.
    fn decisions(
        &self,
        notification: &Notification,
        user: &Value,
        preferences: &UserPreferences,
        now: Timestamp,
    ) -> Vec<(ChannelDecision, Option<PlannedStep>)> {
        let settings = self.settings.current();
        let kind = &notification.request.notification_type;
        let requested = &notification.request.channels;
        let Some(steps) = settings.workflows.get(kind) else {
            return resolve(&settings.defaults, preferences, kind, requested, now)
                .into_iter()
                .map(|decision| (decision, None))
                .collect();
        };
        let zone = user_zone(user);
        let planned = workflow::schedule(
            steps,
            notification.created_at,
            &zone,
            notification.request.priority,
        );
        planned
            .into_iter()
            .filter_map(|step| {
                let Some(decision) =
                    resolve(&settings.defaults, preferences, kind, requested, step.at)
                        .into_iter()
                        .find(|decision| decision.channel == step.channel)
                else {
                    tracing::info!(notification = %notification.id, channel = %step.channel, "workflow step left out: the channel is off for this user or not requested");
                    return None;
                };
                Some((decision, Some(step)))
            })
            .collect()
    }

    /// Decides (once: a replan reads the first decision back) whether
    /// `notification` goes out now under its type's throttle, if any; see
    /// [`crate::throttle`]. Over the limit, counts and logs it.
    async fn throttle(
        &self,
        notification: &Notification,
        now: Timestamp,
    ) -> Result<Decision, EngineError> {
        let settings = self.settings.current();
        let kind = &notification.request.notification_type;
        let category = settings.defaults.get(kind).category.clone();
        let Some(check) = settings.throttles.for_type(kind, category.as_deref()) else {
            return Ok(Decision::Sent);
        };
        let (decision, first) = self
            .notifications
            .decide(&notification.user_id, &notification.id, &check, now)
            .await?;
        if first && decision != Decision::Sent {
            self.throttled
                .with_label_values(&[kind.as_str(), decision.outcome()])
                .inc();
            tracing::info!(notification = %notification.id, user = %notification.user_id, r#type = %kind, outcome = decision.outcome(), "over the type's throttle");
        }
        Ok(decision)
    }

    /// The deliveries of `notification` on `channel`: one per recipient
    /// (one per active device on the push channels), sharing one rendering.
    async fn deliveries(
        &self,
        notification: &Notification,
        channel: ChannelKind,
        user: &Value,
        not_before: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<Vec<Delivery>, PlanError> {
        if !self.settings.current().enabled.contains(&channel) {
            return Err(PlanError::ChannelNotConfigured);
        }
        let rendering = self.render(notification, channel, user)?;
        self.rendered_deliveries(notification, channel, rendering, user, not_before, now)
            .await
    }

    /// [`Self::deliveries`] with the message already rendered (a digest's):
    /// the rendering and the name of the template that rendered it (see
    /// [`Self::render`]).
    pub(super) async fn rendered_deliveries(
        &self,
        notification: &Notification,
        channel: ChannelKind,
        (rendered, template): (Rendered, Option<String>),
        user: &Value,
        not_before: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<Vec<Delivery>, PlanError> {
        if !self.settings.current().enabled.contains(&channel) {
            return Err(PlanError::ChannelNotConfigured);
        }
        let recipients = self.recipients(notification, channel, user).await?;
        let message = OutboundMessage {
            delivery_id: String::new(),
            notification_id: notification.id.clone(),
            notification_type: notification.request.notification_type.clone(),
            category: self
                .settings
                .current()
                .defaults
                .get(&notification.request.notification_type)
                .category
                .clone(),
            subject: if rendered.subject.is_empty() {
                rendered.title
            } else {
                rendered.subject
            },
            text_body: rendered.text,
            html_body: rendered.html,
            data: Value::Object(notification.request.data.clone()),
            unsubscribe_url: self.unsubscribe_url(notification, channel, now),
        };
        let priority = notification.request.priority;
        let deliveries = recipients
            .into_iter()
            .map(|(recipient, device_id)| {
                let mut delivery = Delivery::new(
                    NewDelivery {
                        notification_id: notification.id.clone(),
                        user_id: notification.user_id.clone(),
                        channel,
                        priority,
                        message: message.clone(),
                        recipient,
                        not_before,
                    },
                    now,
                );
                if let Some(id) = delivery_id_for(&notification.id, channel, device_id.as_deref()) {
                    delivery.id = id;
                    delivery.message.delivery_id = id.to_string();
                }
                // Copied onto each delivery so its facts carry them (see
                // `delivery::facts`): analytics never loads notifications.
                delivery.template = template.clone();
                delivery.cost = notification.request.cost;
                if let Some(tracking) = self
                    .tracking
                    .as_ref()
                    .filter(|_| channel == ChannelKind::Email)
                {
                    delivery.message.html_body =
                        tracking.instrument_html(delivery.id, &delivery.message.html_body);
                }
                delivery
            })
            .collect();
        Ok(deliveries)
    }

    /// The one-click unsubscribe link of an email of `notification`'s
    /// type. None on other channels, without configured links, and for
    /// critical types: they cannot be switched off, and RFC 8058 has a
    /// link's POST unsubscribe, so such a link would promise what the
    /// server refuses (and mailbox providers do not ask transactional
    /// mail for one).
    fn unsubscribe_url(
        &self,
        notification: &Notification,
        channel: ChannelKind,
        now: Timestamp,
    ) -> Option<String> {
        let links = self
            .unsubscribe
            .as_ref()
            .filter(|_| channel == ChannelKind::Email)?;
        let notification_type = &notification.request.notification_type;
        if self
            .settings
            .current()
            .defaults
            .get(notification_type)
            .critical
        {
            return None;
        }
        let url = links.url(&UnsubscribeClaims {
            user_id: notification.user_id.clone(),
            notification_type: notification_type.clone(),
            channel,
            issued_at: now,
        });
        if url.is_none() {
            tracing::warn!(notification = %notification.id, "user id and type too long for an unsubscribe link; the email goes without one");
        }
        url
    }

    /// Who gets `notification` on `channel`, each with the device id when
    /// the recipient is a registered device.
    async fn recipients(
        &self,
        notification: &Notification,
        channel: ChannelKind,
        user: &Value,
    ) -> Result<Vec<(Recipient, Option<String>)>, PlanError> {
        if let Some(platform) = Platform::of_channel(channel) {
            let devices = self.devices.active(&notification.user_id, platform).await?;
            if devices.is_empty() {
                return Err(PlanError::NoDevices(channel));
            }
            return Ok(devices
                .into_iter()
                .filter_map(|device| Some((device.recipient()?, Some(device.id))))
                .collect());
        }
        Ok(vec![(self.recipient(notification, channel, user)?, None)])
    }

    fn recipient(
        &self,
        notification: &Notification,
        channel: ChannelKind,
        user: &Value,
    ) -> Result<Recipient, PlanError> {
        let trait_text = |name: &str| user.get(name).and_then(Value::as_str).map(str::to_owned);
        match channel {
            ChannelKind::InApp => Ok(Recipient::User {
                user_id: notification.user_id.clone(),
            }),
            ChannelKind::Email => Ok(Recipient::Email {
                address: trait_text(contact::EMAIL).ok_or(PlanError::NoAddress("email"))?,
                name: trait_text("name"),
            }),
            ChannelKind::Sms => Ok(Recipient::Phone {
                number: trait_text(contact::PHONE).ok_or(PlanError::NoAddress("phone"))?,
            }),
            ChannelKind::Webhook => Ok(Recipient::Url {
                url: self
                    .settings
                    .current()
                    .webhook_urls
                    .get(&notification.request.notification_type)
                    .cloned()
                    .ok_or(PlanError::NoWebhookUrl)?,
            }),
            ChannelKind::Apns | ChannelKind::Fcm | ChannelKind::WebPush => {
                Err(PlanError::NoDevices(channel))
            }
        }
    }

    /// The user's traits (from identify calls) plus their `id`: what
    /// templates see as `user`.
    /// What planning needs of a user: [`Self::user_context`] and their
    /// preferences.
    pub(super) async fn user_and_preferences(
        &self,
        user_id: &str,
    ) -> Result<(Value, UserPreferences), EngineError> {
        let mut user = self.user_context(user_id).await?;
        let preferences = self.preferences.get(user_id).await?;
        if let Value::Object(traits) = &mut user {
            with_time_zone(traits, &preferences);
        }
        Ok((user, preferences))
    }

    /// [`Self::user_and_preferences`] of each of `user_ids`, in two
    /// queries (per 500 users).
    async fn users_and_preferences(
        &self,
        user_ids: &[&str],
    ) -> Result<std::collections::HashMap<String, (Value, UserPreferences)>, EngineError> {
        let mut traits = self.store.traits_of(user_ids).await?;
        let mut preferences = self.preferences.get_many(user_ids).await?;
        Ok(user_ids
            .iter()
            .map(|id| {
                let mut user = traits.remove(*id).unwrap_or_default();
                user.insert("id".into(), Value::String((*id).to_owned()));
                let preferences = preferences.remove(*id).unwrap_or_default();
                with_time_zone(&mut user, &preferences);
                ((*id).to_owned(), (Value::Object(user), preferences))
            })
            .collect())
    }

    pub(super) async fn user_context(&self, user_id: &str) -> Result<Value, EngineError> {
        let profile = self.store.profile(user_id).await?;
        let mut user = profile.map(|profile| profile.traits).unwrap_or_default();
        user.insert("id".into(), Value::String(user_id.to_owned()));
        Ok(Value::Object(user))
    }

    /// The configured template of the notify's `template` (or its type),
    /// else the notify's own title and body; with the name of the template
    /// it rendered (`None` for the notify's own title and body), which the
    /// deliveries keep for per-template analytics.
    pub(super) fn render(
        &self,
        notification: &Notification,
        channel: ChannelKind,
        user: &Value,
    ) -> Result<(Rendered, Option<String>), PlanError> {
        let data = Value::Object(notification.request.data.clone());
        let template_type = notification
            .request
            .template
            .as_deref()
            .unwrap_or(&notification.request.notification_type);
        let input = RenderInput {
            notification_type: template_type,
            notification_id: &notification.id,
            data: &data,
            user,
        };
        match self.settings.current().templates.render(channel, input) {
            Ok(rendered) => Ok((rendered, Some(template_type.to_owned()))),
            Err(TemplateError::NotFound { .. }) => {
                let title = notification.request.title.clone().unwrap_or_default();
                let body = notification.request.body.clone().unwrap_or_default();
                if title.is_empty() && body.is_empty() {
                    return Err(PlanError::NothingToSay);
                }
                Ok((
                    Rendered {
                        subject: title.clone(),
                        title,
                        text: body,
                        html: String::new(),
                    },
                    None,
                ))
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// The zone the user chose in their preferences, when they chose one, is
/// their `timezone` as templates see it (over an identify trait of that
/// name): it is the zone quiet hours and digests already use, so a time a
/// template shows agrees with when the message arrives.
fn with_time_zone(user: &mut serde_json::Map<String, Value>, preferences: &UserPreferences) {
    if let Some(zone) = &preferences.timezone {
        user.insert("timezone".into(), Value::String(zone.name().to_owned()));
    }
}

/// The user's zone as templates see it (`timezone`: their preferences'
/// zone, else the identify trait), else UTC: where a workflow's
/// `wait_until` is read.
fn user_zone(user: &Value) -> jiff::tz::TimeZone {
    user.get("timezone")
        .and_then(Value::as_str)
        .and_then(|name| jiff::tz::TimeZone::get(name).ok())
        .unwrap_or(jiff::tz::TimeZone::UTC)
}

fn new_notification(event: &Event, user_id: &str, request: &NotifyRequest) -> NewNotification {
    NewNotification {
        user_id: user_id.to_owned(),
        request: request.clone(),
        source_event_id: Some(event.id.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_are_stable_distinct_and_keep_the_notifications_prefix() {
        // Two notifications of one millisecond whose counters differ only
        // in their low bits: the case that used to collide on one device.
        let first = "0195f3a0-0000-7000-8000-000100000000";
        let second = "0195f3a0-0000-7000-8000-000200000000";
        let device = Some("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b");
        let a = delivery_id_for(first, ChannelKind::Apns, device).unwrap();
        let b = delivery_id_for(second, ChannelKind::Apns, device).unwrap();
        assert_ne!(a, b);
        // Stable: a replay maps to the same delivery.
        assert_eq!(delivery_id_for(first, ChannelKind::Apns, device), Some(a));
        // One notification: a delivery per channel and per device.
        let ids = [
            a,
            delivery_id_for(first, ChannelKind::Fcm, device).unwrap(),
            delivery_id_for(first, ChannelKind::Apns, Some("0000")).unwrap(),
            delivery_id_for(first, ChannelKind::InApp, None).unwrap(),
            delivery_id_for(first, ChannelKind::Email, None).unwrap(),
        ];
        let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        // Every one keeps the notification's first ten bytes (time and
        // counter), which the queue's prefix scan relies on.
        let notification = Uuid::parse_str(first).unwrap();
        let prefix = &notification.as_bytes()[..10];
        assert!(ids.iter().all(|id| &id.as_bytes()[..10] == prefix));
        assert_eq!(
            delivery_id_for("not a uuid", ChannelKind::Email, None),
            None
        );
    }
}
