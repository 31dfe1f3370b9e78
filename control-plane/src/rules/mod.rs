//! Rules: "on track event X (with property conditions) notify type T",
//! immediately or after a delay that a later event (`unless`) can cancel.
//!
//! | module | what it does |
//! |---|---|
//! | [`model`] | [`Rule`] (the `[[rules]]` TOML table), conditions, validation |
//! | [`matcher`] | [`matching`]: the rules a track event fires |
//! | [`pending`] | [`PendingTriggers`]: delayed triggers (in SQL, see `storage::pending`), due, cancelled, finished |
//!
//! Pure building blocks: nothing here creates notifications or runs a
//! timer. The engine, on each track event with a user: calls
//! [`PendingTriggers::cancel_for`] first, then [`matching`]; an immediate
//! rule becomes [`Rule::notification`] at once, a delayed one is
//! [`PendingTriggers::schedule`]d; a periodic pass fires
//! [`PendingTriggers::due`] ones ([`Pending::notification`]) and then
//! [`PendingTriggers::complete`]s them. Every notification a rule creates
//! carries the source id `rule:<name>:<event id>` ([`source_id`]), so a
//! refire after a crash is absorbed by the notification store.

pub mod matcher;
pub mod model;
pub mod pending;

pub use matcher::matching;
pub use model::{Condition, Op, Rule, RuleError, lookup, source_id, validate_rules};
pub use pending::{Pending, PendingError, PendingTriggers};

#[cfg(test)]
mod tests;
