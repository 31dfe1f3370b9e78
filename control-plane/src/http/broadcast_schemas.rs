//! The schemas of `POST /v1/admin/broadcasts`'s body (`NewBroadcast`,
//! `AudienceRequest`, `SegmentRequest`, `TraitCondition`): stricter than
//! the structs it is read into, because the checks after reading
//! (`NewBroadcast::spec`, [`Audience::validate`]) refuse more than serde
//! does, and a client (or a fuzzer) should know that from the document. So
//! they are built here, from the constants those checks use; the answer's
//! `Audience` and `Segment` stay derived from the types.

use std::borrow::Cow;

use utoipa::openapi::schema::{
    AdditionalProperties, AnyOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema,
    SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use super::broadcasts::{MAX_NAME_CHARS, NewBroadcast};
use super::openapi::{NO_CONTROL_CHARACTERS, string_enum};
use crate::broadcasts::{MAX_CONDITIONS, MAX_SCHEDULE_AHEAD, name_pattern};
use crate::rules::Op;

/// A cost as `Money` reads it: at most 1,000,000,000 (`Money::MAX`), at
/// most 6 decimals; empty is unset.
const COST: &str = "^(([0-9]{1,9}|0[0-9]{9})(\\.[0-9]{1,6})?|1000000000(\\.0{1,6})?)?$";

fn closed() -> Option<AdditionalProperties<Schema>> {
    Some(AdditionalProperties::FreeForm(false))
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn string_or_null() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::String, Type::Null]))
}

impl PartialSchema for NewBroadcast {
    fn schema() -> RefOr<Schema> {
        let days_ahead = MAX_SCHEDULE_AHEAD.as_secs() / 86_400;
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "A notify for many users: a notify's fields (as the agent's `/v1/notify` takes \
                 them, without a user) plus the id, the audience and an optional start time.",
            ))
            .property(
                "id",
                string().pattern(Some(name_pattern())).description(Some(
                    "The caller's idempotency key: the same id with the same content returns \
                     the first broadcast.",
                )),
            )
            .property(
                "type",
                string()
                    .min_length(Some(1))
                    .max_length(Some(MAX_NAME_CHARS))
                    .pattern(Some(NO_CONTROL_CHARACTERS))
                    .description(Some(format!(
                        "The notification type: at most {MAX_NAME_CHARS} characters, no control \
                         characters."
                    ))),
            )
            .property(
                "template",
                string_or_null()
                    .max_length(Some(MAX_NAME_CHARS))
                    .pattern(Some(NO_CONTROL_CHARACTERS))
                    .description(Some(format!(
                        "A template name: at most {MAX_NAME_CHARS} characters, no control \
                         characters. Absent, null or empty: the type's templates, else title \
                         and body."
                    ))),
            )
            .property(
                "title",
                string_or_null().description(Some("`null`: absent.")),
            )
            .property(
                "body",
                string_or_null().description(Some("`null`: absent.")),
            )
            .property(
                "data",
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .additional_properties(Some(AdditionalProperties::FreeForm(true)))
                    .description(Some("Template data.")),
            )
            .property(
                "channels",
                ArrayBuilder::new()
                    .items(Ref::from_schema_name("Channel"))
                    .description(Some("Empty: the type's defaults.")),
            )
            .property("priority", Ref::from_schema_name("Priority"))
            .property(
                "cost",
                string_or_null().pattern(Some(COST)).description(Some(
                    "Cost of each message in the configured currency, as a decimal string \
                     (\"0.05\"): at most 1000000000 with at most 6 decimals. Absent, null or \
                     empty: the configured cost per channel.",
                )),
            )
            .property("audience", Ref::from_schema_name(AudienceRequest::name()))
            .property(
                "send_at",
                string_or_null()
                    .format(Some(utoipa::openapi::SchemaFormat::Custom(
                        "nudge-schedule-time".to_owned(),
                    )))
                    .description(Some(format!(
                        "RFC 3339 time to start; at most {days_ahead} days ahead. Absent or \
                         past: at once."
                    ))),
            )
            .required("id")
            .required("type")
            .required("audience")
            .additional_properties(closed())
            .into()
    }
}

impl ToSchema for NewBroadcast {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("NewBroadcast")
    }
}

/// `NewBroadcast.audience`: exactly one of a topic and a segment.
pub(crate) struct AudienceRequest;

impl PartialSchema for AudienceRequest {
    fn schema() -> RefOr<Schema> {
        let topic = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("topic", string().pattern(Some(name_pattern())))
            .required("topic")
            .additional_properties(closed());
        let segment = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("segment", Ref::from_schema_name(SegmentRequest::name()))
            .required("segment")
            .additional_properties(closed());
        OneOfBuilder::new()
            .description(Some(
                "Who a broadcast goes to: a topic's subscribers, or a segment of users.",
            ))
            .item(topic)
            .item(segment)
            .into()
    }
}

impl ToSchema for AudienceRequest {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("AudienceRequest")
    }
}

/// A segment as a request states it: at least one condition or
/// `active_within` (what [`Audience::validate`] requires).
///
/// [`Audience::validate`]: crate::broadcasts::Audience::validate
pub(crate) struct SegmentRequest;

impl PartialSchema for SegmentRequest {
    fn schema() -> RefOr<Schema> {
        let traits = || {
            ArrayBuilder::new()
                .items(Ref::from_schema_name(TraitCondition::name()))
                .max_items(Some(MAX_CONDITIONS))
        };
        // Up to 9999 of a unit: `MAX_ACTIVE_WITHIN` is 9999 days.
        let active_within = || {
            string()
            .pattern(Some("^[1-9][0-9]{0,3}(s|m|h|d)$"))
            .description(Some(
                "A duration: 1 to 9999 seconds (`s`), minutes (`m`), hours (`h`) or days (`d`), \
                 e.g. `7d`.",
            ))
        };
        // "At least one": each branch is the whole object with one of the
        // two required (utoipa's object schema has no `anyOf` of its own).
        let branch = |required: &str, min_traits: Option<usize>| {
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property("traits", traits().min_items(min_traits))
                .property("active_within", active_within())
                .required(required)
                .additional_properties(closed())
        };
        AnyOfBuilder::new()
            .description(Some(
                "Users whose traits satisfy every condition and, with `active_within`, who sent \
                 an event in that window before the fan-out reached them. At least one \
                 condition or `active_within`.",
            ))
            .item(branch("traits", Some(1)))
            .item(branch("active_within", None))
            .into()
    }
}

impl ToSchema for SegmentRequest {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("SegmentRequest")
    }
}

/// A segment's condition: the value each operator takes.
pub(crate) struct TraitCondition;

/// The operators by what their `value` is: a number, any value but null,
/// or a flag (`exists`, whose value is optional).
const NUMERIC: [Op; 4] = [Op::Gt, Op::Gte, Op::Lt, Op::Lte];
const ANY_VALUE: [Op; 3] = [Op::Eq, Op::Ne, Op::Contains];
const FLAG: [Op; 1] = [Op::Exists];

impl PartialSchema for TraitCondition {
    fn schema() -> RefOr<Schema> {
        let condition = |ops: &[Op], value: ObjectBuilder, value_required: bool| {
            let mut condition = ObjectBuilder::new()
                .schema_type(Type::Object)
                .property("property", string().pattern(Some("^[^.]+(\\.[^.]+)*$")))
                .property("op", string_enum(ops.iter().map(|op| op.as_str())))
                .property("value", value)
                .required("property")
                .required("op")
                .additional_properties(closed());
            if value_required {
                condition = condition.required("value");
            }
            condition
        };
        let number = ObjectBuilder::new().schema_type(Type::Number);
        // Any value but null (utoipa's schema has no `not`).
        let not_null = ObjectBuilder::new().schema_type(SchemaType::from_iter([
            Type::String,
            Type::Number,
            Type::Integer,
            Type::Boolean,
            Type::Object,
            Type::Array,
        ]));
        let flag = ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::Boolean, Type::Null]))
            .description(Some(
                "true (the default; also null): present and not null; false: absent or null.",
            ));
        OneOfBuilder::new()
            .description(Some(
                "A condition on a user's traits (from identify calls), as a rule's condition on \
                 event properties: `property` is a dotted path (`address.country`). \
                 `gt`/`gte`/`lt`/`lte` compare numbers; `exists` takes no value or a boolean; \
                 the others take any value but null.",
            ))
            .item(condition(&NUMERIC, number, true))
            .item(condition(&ANY_VALUE, not_null, true))
            .item(condition(&FLAG, flag, false))
            .into()
    }
}

impl ToSchema for TraitCondition {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("TraitCondition")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operator is in exactly one group, and each group's names are
    /// ones a condition is read with.
    #[test]
    fn every_operator_has_one_value_rule() {
        let grouped: Vec<Op> = NUMERIC
            .iter()
            .chain(&ANY_VALUE)
            .chain(&FLAG)
            .copied()
            .collect();
        let names: std::collections::BTreeSet<&str> =
            grouped.iter().map(|op| op.as_str()).collect();
        assert_eq!(names.len(), grouped.len(), "an operator in two groups");
        for name in &names {
            let op: Op = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(op.as_str(), *name);
        }
        // `Op`'s variants, by `as_str`'s exhaustive match.
        assert_eq!(names.len(), 8, "an operator without a value rule");
    }
}
