//! Throttling per user: at most `limit` notifications of a type (or of its
//! whole category) reach a user within a rolling `window`; the rest are
//! dropped, or folded into a digest that goes out when the window lets
//! one through again, as the type says.
//!
//! ```toml
//! [types.comment.throttle]
//! limit = 5          # at most 5 notifications ...
//! window = "1h"      # ... in any hour (1s to 31d)
//! per = "type"       # or "category": every type of the type's category counts
//! over = "digest"    # or "drop" (the default)
//! ```
//!
//! # Promises
//!
//! * **What counts is what goes out now.** A notification counts when at
//!   least one of its channels would send it now or after quiet hours; one
//!   the user's preferences digest or switch off on every channel neither
//!   counts nor is throttled. Critical types are throttled too when they
//!   set a throttle: it is the operator's own limit.
//! * **Per category**, the notifications of every type of the category
//!   count, throttled types or not; each throttled type applies its own
//!   limit and window to that count.
//! * **Decided once, in one transaction per notification**, under a
//!   per-user lock on PostgreSQL (SQLite has one writer): two replicas
//!   never both let the `limit`th + 1 through, and a notification planned
//!   again (a replayed event, a crash mid-plan) gets the decision it got
//!   the first time, read back from its record.
//! * **Every decision is recorded** (table `notification_throttles`, see
//!   `storage::throttles`): a dropped notification says so in the admin
//!   API (`GET /v1/admin/notifications/{id}`, `throttle`), in
//!   `nudge_cp_notifications_throttled_total{type,outcome}` and in the log.
//! * **Folded, never lost, with `over = "digest"`**: a throttled
//!   notification joins the type's digest due when the oldest notification
//!   counted in the window leaves it (later on a channel in quiet hours:
//!   when they end); every notification throttled until then is in that
//!   one digest.
//! * Records are kept [`MAX_WINDOW`] (the longest window), then pruned by
//!   housekeeping; erasing a user removes theirs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// The longest window a throttle may have, and how long decisions are
/// kept.
pub const MAX_WINDOW: Duration = Duration::from_secs(31 * 86_400);
/// The highest `limit`.
pub const MAX_LIMIT: u32 = 100_000;

/// A type's throttle as the operator writes it (config file, management
/// API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Throttle {
    /// At most this many notifications in a window (1 to [`MAX_LIMIT`]).
    pub limit: u32,
    /// The rolling window, e.g. `"1h"`, `"30m"`, `"1d"` (1 s to
    /// [`MAX_WINDOW`]).
    pub window: String,
    #[serde(default)]
    pub per: ThrottleScope,
    #[serde(default)]
    pub over: ThrottleOver,
}

/// What a throttle counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThrottleScope {
    /// The type's own notifications.
    #[default]
    Type,
    /// Every notification of the type's category.
    Category,
}

/// What becomes of a notification over the limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThrottleOver {
    /// Not sent; the decision is recorded.
    #[default]
    Drop,
    /// Held for a digest when the window lets one through again.
    Digest,
}

impl Throttle {
    /// The window as a duration, checked against its bounds.
    pub fn window(&self) -> Result<Duration, String> {
        let window = humantime::parse_duration(&self.window)
            .map_err(|error| format!("{:?} is not a duration: {error}", self.window))?;
        if window < Duration::from_secs(1) || window > MAX_WINDOW {
            return Err(format!("{:?} is not between 1s and 31d", self.window));
        }
        Ok(window)
    }

    /// Checks the throttle of a type in `category`: names the field at
    /// fault.
    pub fn check(&self, category: Option<&str>) -> Result<(), (&'static str, String)> {
        if self.limit == 0 || self.limit > MAX_LIMIT {
            return Err((
                "throttle.limit",
                format!("{} is not between 1 and {MAX_LIMIT}", self.limit),
            ));
        }
        self.window()
            .map_err(|message| ("throttle.window", message))?;
        if self.per == ThrottleScope::Category && category.is_none() {
            return Err((
                "throttle.per",
                "\"category\" needs the type to have a category".to_owned(),
            ));
        }
        Ok(())
    }
}

/// The scope key of a type's own count.
pub fn type_scope(notification_type: &str) -> String {
    format!("type:{notification_type}")
}

/// The scope key of a category's count.
pub fn category_scope(category: &str) -> String {
    format!("category:{category}")
}

/// One throttle in force: the count it reads and its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub scope: String,
    pub limit: u32,
    pub window: SignedDuration,
    pub over: ThrottleOver,
}

/// Every throttle in force, compiled from the types (part of
/// [`crate::engine::EngineSettings`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Throttles {
    /// Per throttled type: its limit.
    limits: BTreeMap<String, Limit>,
    /// Categories some type throttles per category: every notification of
    /// such a category is counted.
    counted_categories: BTreeSet<String>,
}

/// What [`Throttles::for_type`] asks of a notification's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The limit to apply, when the type has one.
    pub limit: Option<Limit>,
    /// Every scope the notification counts in when it is let through.
    pub counted_in: Vec<String>,
}

impl Throttles {
    /// From each type's throttle (already checked) and category.
    pub fn new<'a>(
        types: impl IntoIterator<Item = (&'a str, Option<&'a Throttle>, Option<&'a str>)>,
    ) -> Self {
        let mut throttles = Throttles::default();
        for (name, throttle, category) in types {
            let Some(throttle) = throttle else { continue };
            let Ok(window) = throttle.window() else {
                continue;
            };
            let scope = match (throttle.per, category) {
                (ThrottleScope::Category, Some(category)) => {
                    throttles.counted_categories.insert(category.to_owned());
                    category_scope(category)
                }
                _ => type_scope(name),
            };
            throttles.limits.insert(
                name.to_owned(),
                Limit {
                    scope,
                    limit: throttle.limit,
                    window: SignedDuration::try_from(window).unwrap_or(SignedDuration::MAX),
                    over: throttle.over,
                },
            );
        }
        throttles
    }

    /// What deciding on a notification of `notification_type` (in
    /// `category`) involves; `None` when nothing throttles or counts it.
    pub fn for_type(&self, notification_type: &str, category: Option<&str>) -> Option<Check> {
        let limit = self.limits.get(notification_type).cloned();
        let mut counted_in = Vec::new();
        if let Some(limit) = &limit {
            counted_in.push(limit.scope.clone());
        }
        if let Some(category) = category.filter(|c| self.counted_categories.contains(*c)) {
            let scope = category_scope(category);
            if !counted_in.contains(&scope) {
                counted_in.push(scope);
            }
        }
        (!counted_in.is_empty()).then_some(Check { limit, counted_in })
    }
}

/// What a throttle decided for one notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let through (and counted).
    Sent,
    /// Over the limit: not sent.
    Dropped,
    /// Over the limit: held for the digest due then.
    Digest { at: Timestamp },
}

impl Decision {
    /// The outcome's name in records and metrics.
    pub fn outcome(self) -> &'static str {
        match self {
            Decision::Sent => "sent",
            Decision::Dropped => "dropped",
            Decision::Digest { .. } => "digest",
        }
    }
}

/// One recorded decision, as the admin API shows it (the field docs are
/// its descriptions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(
    as = ThrottleDecision,
    description = "What a throttle decided for one notification in one count."
)]
pub struct Recorded {
    /// The count it was decided in: `type:<name>` or `category:<name>`.
    pub scope: String,
    // Its schema (`outcome_schema`) names the outcomes.
    #[schema(schema_with = outcome_schema)]
    pub outcome: String,
    /// When it was decided.
    pub at: Timestamp,
    /// When the digest it was folded into is due (`digest` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub digest_at: Option<Timestamp>,
}

/// `ThrottleDecision.outcome`'s schema: [`Decision::outcome`]'s names.
fn outcome_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let names = [
        Decision::Sent,
        Decision::Dropped,
        Decision::Digest {
            at: Timestamp::UNIX_EPOCH,
        },
    ]
    .map(Decision::outcome);
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(names))
        .description(Some(
            "`sent`: let through (and counted); `dropped`: over the limit, not sent; `digest`: \
             over the limit, held for the digest due at `digest_at`.",
        ))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(limit: u32, window: &str, per: ThrottleScope) -> Throttle {
        Throttle {
            limit,
            window: window.to_owned(),
            per,
            over: ThrottleOver::Drop,
        }
    }

    #[test]
    fn bad_throttles_name_their_field() {
        let field = |t: Throttle, category| t.check(category).unwrap_err().0;
        assert_eq!(
            field(throttle(0, "1h", ThrottleScope::Type), None),
            "throttle.limit"
        );
        assert_eq!(
            field(throttle(MAX_LIMIT + 1, "1h", ThrottleScope::Type), None),
            "throttle.limit"
        );
        for window in ["soon", "0s", "500ms", "32d"] {
            assert_eq!(
                field(throttle(1, window, ThrottleScope::Type), None),
                "throttle.window",
                "{window}"
            );
        }
        assert_eq!(
            field(throttle(1, "1h", ThrottleScope::Category), None),
            "throttle.per"
        );
        assert!(
            throttle(5, "31d", ThrottleScope::Category)
                .check(Some("social"))
                .is_ok()
        );
    }

    #[test]
    fn a_category_throttle_counts_every_type_of_the_category() {
        let per_category = throttle(3, "1h", ThrottleScope::Category);
        let per_type = throttle(2, "10m", ThrottleScope::Type);
        let throttles = Throttles::new([
            ("comment", Some(&per_category), Some("social")),
            ("like", None, Some("social")),
            ("invoice", Some(&per_type), Some("billing")),
            ("news", None, None),
        ]);
        let comment = throttles.for_type("comment", Some("social")).unwrap();
        assert_eq!(comment.limit.unwrap().scope, "category:social");
        assert_eq!(comment.counted_in, ["category:social"]);
        let like = throttles.for_type("like", Some("social")).unwrap();
        assert_eq!(
            (like.limit, like.counted_in),
            (None, vec!["category:social".to_owned()])
        );
        let invoice = throttles.for_type("invoice", Some("billing")).unwrap();
        assert_eq!(invoice.counted_in, ["type:invoice"]);
        assert_eq!(invoice.limit.unwrap().window, SignedDuration::from_mins(10));
        assert_eq!(throttles.for_type("news", None), None);
    }
}
