//! Types and rules: the catalog's RPCs, and their messages ↔
//! [`TypeDefinition`] and [`Rule`]. The catalog validates and decides what
//! the file owns; this module only refuses what cannot even be converted
//! (unknown channel names, enum values, JSON that does not parse).

use crate::throttle::{Throttle, ThrottleOver, ThrottleScope};
use std::collections::BTreeMap;
use std::time::Duration;

use nudge_proto::v1 as pb;

use super::{
    GrpcState, ServiceError, channel, frequency_from_proto, frequency_to_proto, known_enum,
    non_empty, priority_from_proto, priority_to_proto,
};
use crate::catalog::{Entry, Source, TypeDefinition};
use crate::channels::ChannelKind;
use crate::delivery::Engagement;
use crate::rules::{Condition, Op, Rule};
use crate::templates::{LocaleTemplates, Template, TypeTemplates};
use crate::workflow::Step;

pub(super) fn list_types(state: &GrpcState) -> pb::ListTypesResponse {
    pb::ListTypesResponse {
        types: state.catalog.types().into_iter().map(type_entry).collect(),
    }
}

pub(super) fn get_type(state: &GrpcState, name: &str) -> Result<pb::GetTypeResponse, ServiceError> {
    let entry = state
        .catalog
        .get_type(name)
        .ok_or_else(|| ServiceError::NotFound(format!("no type {name:?}")))?;
    Ok(pb::GetTypeResponse {
        r#type: Some(type_entry(entry)),
    })
}

pub(super) async fn put_type(
    state: &GrpcState,
    request: pb::PutTypeRequest,
) -> Result<pb::PutTypeResponse, ServiceError> {
    let proto = request
        .r#type
        .ok_or_else(|| ServiceError::invalid("type", "must be set"))?;
    let (name, definition) = type_from_proto(proto)?;
    let (entry, created) = state.catalog.put_type(&name, definition).await?;
    tracing::info!(r#type = %entry.name, created, "type defined through the management api");
    Ok(pb::PutTypeResponse {
        r#type: Some(type_entry(entry)),
        created,
    })
}

pub(super) async fn delete_type(
    state: &GrpcState,
    request: pb::DeleteTypeRequest,
) -> Result<pb::DeleteTypeResponse, ServiceError> {
    state.catalog.delete_type(&request.name).await?;
    Ok(pb::DeleteTypeResponse {})
}

pub(super) fn list_rules(state: &GrpcState) -> pb::ListRulesResponse {
    pb::ListRulesResponse {
        rules: state.catalog.rules().into_iter().map(rule_entry).collect(),
    }
}

pub(super) fn get_rule(state: &GrpcState, name: &str) -> Result<pb::GetRuleResponse, ServiceError> {
    let entry = state
        .catalog
        .get_rule(name)
        .ok_or_else(|| ServiceError::NotFound(format!("no rule {name:?}")))?;
    Ok(pb::GetRuleResponse {
        rule: Some(rule_entry(entry)),
    })
}

pub(super) async fn put_rule(
    state: &GrpcState,
    request: pb::PutRuleRequest,
) -> Result<pb::PutRuleResponse, ServiceError> {
    let proto = request
        .rule
        .ok_or_else(|| ServiceError::invalid("rule", "must be set"))?;
    let rule = rule_from_proto(proto)?;
    let (entry, created) = state.catalog.put_rule(rule).await?;
    tracing::info!(rule = %entry.name, created, "rule defined through the management api");
    Ok(pb::PutRuleResponse {
        rule: Some(rule_entry(entry)),
        created,
    })
}

pub(super) async fn delete_rule(
    state: &GrpcState,
    request: pb::DeleteRuleRequest,
) -> Result<pb::DeleteRuleResponse, ServiceError> {
    state.catalog.delete_rule(&request.name).await?;
    Ok(pb::DeleteRuleResponse {})
}

// ---------------------------------------------------------------------------
// Types

fn type_from_proto(proto: pb::NotificationType) -> Result<(String, TypeDefinition), ServiceError> {
    if proto.name.is_empty() {
        return Err(ServiceError::invalid("type.name", "must not be empty"));
    }
    let channels = proto
        .channels
        .iter()
        .map(|name| channel("type.channels", name))
        .collect::<Result<_, _>>()?;
    let frequency = frequency_from_proto("type.frequency", proto.frequency)?.unwrap_or_default();
    let templates = proto
        .templates
        .map(templates_from_proto)
        .transpose()?
        .unwrap_or_default();
    let definition = TypeDefinition {
        channels,
        critical: proto.critical,
        frequency,
        category: non_empty(proto.category),
        webhook_url: non_empty(proto.webhook_url),
        templates,
        throttle: proto.throttle.map(throttle_from_proto).transpose()?,
        digest_key: non_empty(proto.digest_key),
        steps: proto
            .steps
            .into_iter()
            .enumerate()
            .map(|(index, step)| step_from_proto(index, step))
            .collect::<Result<_, _>>()?,
    };
    Ok((proto.name, definition))
}

/// One workflow step; its sense (one kind, durations) is checked with the
/// rest of the type by [`TypeDefinition::check`].
fn step_from_proto(index: usize, proto: pb::WorkflowStep) -> Result<Step, ServiceError> {
    let field = |name: &str| format!("type.steps[{index}].{name}");
    let channel = if proto.channel.is_empty() {
        None
    } else {
        Some(channel(&field("channel"), &proto.channel)?)
    };
    let unless = proto
        .unless
        .iter()
        .map(|name| match name.as_str() {
            "opened" => Ok(Engagement::Opened),
            "read" => Ok(Engagement::Read),
            "clicked" => Ok(Engagement::Clicked),
            other => Err(ServiceError::invalid(
                &field("unless"),
                format!("{other:?} is not opened, read or clicked"),
            )),
        })
        .collect::<Result<_, _>>()?;
    let min_priority = match known_enum(&field("min_priority"), proto.min_priority)? {
        pb::Priority::Unspecified => None,
        _ => Some(priority_from_proto(
            &field("min_priority"),
            proto.min_priority,
        )?),
    };
    Ok(Step {
        channel,
        wait: non_empty(proto.wait),
        wait_until: non_empty(proto.wait_until),
        unless,
        always: proto.always,
        min_priority,
    })
}

fn step_to_proto(step: Step) -> pb::WorkflowStep {
    pb::WorkflowStep {
        channel: step
            .channel
            .map(|channel| channel.as_str().to_owned())
            .unwrap_or_default(),
        wait: step.wait.unwrap_or_default(),
        wait_until: step.wait_until.unwrap_or_default(),
        unless: step
            .unless
            .iter()
            .map(|kind| kind.as_str().to_owned())
            .collect(),
        always: step.always,
        min_priority: step
            .min_priority
            .map_or(pb::Priority::Unspecified, priority_to_proto)
            .into(),
    }
}

fn throttle_from_proto(proto: pb::Throttle) -> Result<Throttle, ServiceError> {
    let per = match pb::ThrottleScope::try_from(proto.per) {
        Ok(pb::ThrottleScope::Unspecified | pb::ThrottleScope::Type) => ThrottleScope::Type,
        Ok(pb::ThrottleScope::Category) => ThrottleScope::Category,
        Err(_) => {
            return Err(ServiceError::invalid(
                "type.throttle.per",
                format!("{} is not a ThrottleScope", proto.per),
            ));
        }
    };
    let over = match pb::ThrottleOver::try_from(proto.over) {
        Ok(pb::ThrottleOver::Unspecified | pb::ThrottleOver::Drop) => ThrottleOver::Drop,
        Ok(pb::ThrottleOver::Digest) => ThrottleOver::Digest,
        Err(_) => {
            return Err(ServiceError::invalid(
                "type.throttle.over",
                format!("{} is not a ThrottleOver", proto.over),
            ));
        }
    };
    Ok(Throttle {
        limit: proto.limit,
        window: proto.window,
        per,
        over,
    })
}

fn throttle_to_proto(throttle: Throttle) -> pb::Throttle {
    pb::Throttle {
        limit: throttle.limit,
        window: throttle.window,
        per: match throttle.per {
            ThrottleScope::Type => pb::ThrottleScope::Type,
            ThrottleScope::Category => pb::ThrottleScope::Category,
        }
        .into(),
        over: match throttle.over {
            ThrottleOver::Drop => pb::ThrottleOver::Drop,
            ThrottleOver::Digest => pb::ThrottleOver::Digest,
        }
        .into(),
    }
}

fn templates_from_proto(proto: pb::TypeTemplates) -> Result<TypeTemplates, ServiceError> {
    let by_channel = |field: &str, map: std::collections::HashMap<String, pb::Template>| {
        map.into_iter()
            .map(|(name, template)| Ok((channel(field, &name)?, template_from_proto(template))))
            .collect::<Result<BTreeMap<_, _>, ServiceError>>()
    };
    let locales = proto
        .locales
        .into_iter()
        .map(|(locale, templates)| {
            let field = |part: &str| format!("type.templates.locales.{locale}.{part}");
            let templates = LocaleTemplates {
                fallback: templates.fallback.map(template_from_proto),
                channels: by_channel(&field("channels"), templates.channels)?,
                digest_fallback: templates.digest_fallback.map(template_from_proto),
                digest_channels: by_channel(&field("digest_channels"), templates.digest_channels)?,
            };
            Ok((locale, templates))
        })
        .collect::<Result<BTreeMap<_, _>, ServiceError>>()?;
    Ok(TypeTemplates {
        fallback: proto.fallback.map(template_from_proto),
        channels: by_channel("type.templates.channels", proto.channels)?,
        digest_fallback: proto.digest_fallback.map(template_from_proto),
        digest_channels: by_channel("type.templates.digest_channels", proto.digest_channels)?,
        locales,
    })
}

fn template_from_proto(proto: pb::Template) -> Template {
    Template {
        subject: proto.subject,
        title: proto.title,
        text: proto.text,
        html: proto.html,
    }
}

fn template_to_proto(template: Template) -> pb::Template {
    pb::Template {
        subject: template.subject,
        title: template.title,
        text: template.text,
        html: template.html,
    }
}

fn type_entry(entry: Entry<TypeDefinition>) -> pb::TypeEntry {
    let Entry {
        name,
        definition,
        source,
        problem,
    } = entry;
    let by_channel = |map: BTreeMap<ChannelKind, Template>| {
        map.into_iter()
            .map(|(channel, template)| (channel.as_str().to_owned(), template_to_proto(template)))
            .collect()
    };
    let templates = definition.templates;
    let proto = pb::NotificationType {
        name,
        channels: definition
            .channels
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect(),
        critical: definition.critical,
        frequency: frequency_to_proto(definition.frequency).into(),
        category: definition.category.unwrap_or_default(),
        webhook_url: definition.webhook_url.unwrap_or_default(),
        templates: Some(pb::TypeTemplates {
            fallback: templates.fallback.map(template_to_proto),
            channels: by_channel(templates.channels),
            digest_fallback: templates.digest_fallback.map(template_to_proto),
            digest_channels: by_channel(templates.digest_channels),
            locales: templates
                .locales
                .into_iter()
                .map(|(locale, templates)| {
                    let templates = pb::LocaleTemplates {
                        fallback: templates.fallback.map(template_to_proto),
                        channels: by_channel(templates.channels),
                        digest_fallback: templates.digest_fallback.map(template_to_proto),
                        digest_channels: by_channel(templates.digest_channels),
                    };
                    (locale, templates)
                })
                .collect(),
        }),
        throttle: definition.throttle.map(throttle_to_proto),
        digest_key: definition.digest_key.unwrap_or_default(),
        steps: definition.steps.into_iter().map(step_to_proto).collect(),
    };
    pb::TypeEntry {
        r#type: Some(proto),
        source: source_to_proto(source).into(),
        problem: problem.unwrap_or_default(),
    }
}

fn source_to_proto(source: Source) -> pb::Source {
    match source {
        Source::File => pb::Source::ConfigFile,
        Source::Api => pb::Source::Api,
    }
}

// ---------------------------------------------------------------------------
// Rules

fn rule_from_proto(proto: pb::Rule) -> Result<Rule, ServiceError> {
    let when = proto
        .when
        .into_iter()
        .enumerate()
        .map(|(index, condition)| condition_from_proto(&format!("rule.when[{index}]"), condition))
        .collect::<Result<_, _>>()?;
    let delay = proto
        .delay
        .map(|delay| {
            Duration::try_from(delay).map_err(|err| {
                ServiceError::invalid("rule.delay", format!("not a duration: {err}"))
            })
        })
        .transpose()?;
    Ok(Rule {
        name: proto.name,
        on: proto.on,
        notify: proto.notify,
        when,
        delay,
        unless: non_empty(proto.unless),
        channels: proto.channels,
        priority: priority_from_proto("rule.priority", proto.priority)?,
    })
}

/// `proto` as a condition; refusals name `<field>.op` or
/// `<field>.value_json` (`field` is e.g. `rule.when[2]`).
pub(super) fn condition_from_proto(
    field: &str,
    proto: pb::Condition,
) -> Result<Condition, ServiceError> {
    let op = match known_enum(&format!("{field}.op"), proto.op)? {
        pb::ConditionOp::Unspecified => {
            return Err(ServiceError::invalid(
                &format!("{field}.op"),
                "must be set (eq, ne, gt, gte, lt, lte, contains, exists)",
            ));
        }
        pb::ConditionOp::Eq => Op::Eq,
        pb::ConditionOp::Ne => Op::Ne,
        pb::ConditionOp::Gt => Op::Gt,
        pb::ConditionOp::Gte => Op::Gte,
        pb::ConditionOp::Lt => Op::Lt,
        pb::ConditionOp::Lte => Op::Lte,
        pb::ConditionOp::Contains => Op::Contains,
        pb::ConditionOp::Exists => Op::Exists,
    };
    let value = if proto.value_json.trim().is_empty() {
        None
    } else {
        Some(serde_json::from_str(&proto.value_json).map_err(|err| {
            ServiceError::invalid(&format!("{field}.value_json"), format!("not JSON: {err}"))
        })?)
    };
    Ok(Condition {
        property: proto.property,
        op,
        value,
    })
}

fn rule_entry(entry: Entry<Rule>) -> pb::RuleEntry {
    let rule = entry.definition;
    let when = rule
        .when
        .into_iter()
        .map(|condition| pb::Condition {
            property: condition.property,
            op: op_to_proto(condition.op).into(),
            value_json: condition
                .value
                .map(|value| value.to_string())
                .unwrap_or_default(),
        })
        .collect();
    let proto = pb::Rule {
        name: rule.name,
        on: rule.on,
        notify: rule.notify,
        when,
        delay: rule.delay.map(|delay| prost_types::Duration {
            seconds: i64::try_from(delay.as_secs()).unwrap_or(i64::MAX),
            nanos: delay.subsec_nanos() as i32,
        }),
        unless: rule.unless.unwrap_or_default(),
        channels: rule.channels,
        priority: priority_to_proto(rule.priority).into(),
    };
    pb::RuleEntry {
        rule: Some(proto),
        source: source_to_proto(entry.source).into(),
        problem: entry.problem.unwrap_or_default(),
    }
}

pub(super) fn op_to_proto(op: Op) -> pb::ConditionOp {
    match op {
        Op::Eq => pb::ConditionOp::Eq,
        Op::Ne => pb::ConditionOp::Ne,
        Op::Gt => pb::ConditionOp::Gt,
        Op::Gte => pb::ConditionOp::Gte,
        Op::Lt => pb::ConditionOp::Lt,
        Op::Lte => pb::ConditionOp::Lte,
        Op::Contains => pb::ConditionOp::Contains,
        Op::Exists => pb::ConditionOp::Exists,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_type_round_trips() {
        let proto = pb::NotificationType {
            name: "welcome".to_owned(),
            channels: vec!["in_app".to_owned(), "email".to_owned()],
            critical: true,
            frequency: pb::Frequency::Daily.into(),
            category: "onboarding".to_owned(),
            webhook_url: String::new(),
            templates: Some(pb::TypeTemplates {
                channels: [(
                    "in_app".to_owned(),
                    pb::Template {
                        title: "Hi".to_owned(),
                        ..Default::default()
                    },
                )]
                .into(),
                ..Default::default()
            }),
            throttle: Some(pb::Throttle {
                limit: 3,
                window: "10m".to_owned(),
                per: pb::ThrottleScope::Category.into(),
                over: pb::ThrottleOver::Digest.into(),
            }),
            digest_key: "project.id".to_owned(),
            steps: Vec::new(),
        };
        let (name, definition) = type_from_proto(proto.clone()).unwrap();
        let back = type_entry(Entry {
            name,
            definition,
            source: Source::Api,
            problem: None,
        });
        assert_eq!(back.r#type.unwrap(), proto);
        assert_eq!(back.source, i32::from(pb::Source::Api));
    }

    #[test]
    fn a_workflow_round_trips_and_bad_steps_name_the_field() {
        let proto = pb::NotificationType {
            name: "payment_failed".to_owned(),
            steps: vec![
                pb::WorkflowStep {
                    channel: "in_app".to_owned(),
                    ..Default::default()
                },
                pb::WorkflowStep {
                    wait: "1h".to_owned(),
                    ..Default::default()
                },
                pb::WorkflowStep {
                    wait_until: "09:00".to_owned(),
                    ..Default::default()
                },
                pb::WorkflowStep {
                    channel: "email".to_owned(),
                    unless: vec!["opened".to_owned()],
                    min_priority: pb::Priority::High.into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let (name, definition) = type_from_proto(proto.clone()).unwrap();
        assert_eq!(definition.steps.len(), 4);
        let back = type_entry(Entry {
            name,
            definition,
            source: Source::Api,
            problem: None,
        });
        let mut expected = proto.clone();
        expected.templates = Some(pb::TypeTemplates::default());
        expected.frequency = pb::Frequency::Instant.into();
        assert_eq!(back.r#type.unwrap(), expected);
        let mut bad = proto;
        bad.steps[3].unless = vec!["seen".to_owned()];
        let message = type_from_proto(bad.clone()).unwrap_err().to_string();
        assert!(message.starts_with("type.steps[3].unless:"), "{message}");
        bad.steps[3].unless.clear();
        bad.steps[3].channel = "pigeon".to_owned();
        let message = type_from_proto(bad).unwrap_err().to_string();
        assert!(message.starts_with("type.steps[3].channel:"), "{message}");
    }

    #[test]
    fn unknown_channels_and_enums_name_the_field() {
        let bad_channel = pb::NotificationType {
            name: "t".to_owned(),
            channels: vec!["pigeon".to_owned()],
            ..Default::default()
        };
        let message = type_from_proto(bad_channel).unwrap_err().to_string();
        assert!(message.starts_with("type.channels:"), "{message}");
        let bad_frequency = pb::NotificationType {
            name: "t".to_owned(),
            frequency: 99,
            ..Default::default()
        };
        let message = type_from_proto(bad_frequency).unwrap_err().to_string();
        assert!(message.starts_with("type.frequency:"), "{message}");
    }

    #[test]
    fn a_rule_round_trips() {
        let proto = pb::Rule {
            name: "cart".to_owned(),
            on: "cart_add".to_owned(),
            notify: "cart_reminder".to_owned(),
            when: vec![pb::Condition {
                property: "total".to_owned(),
                op: pb::ConditionOp::Gte.into(),
                value_json: "20".to_owned(),
            }],
            delay: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
            unless: "purchase".to_owned(),
            channels: vec!["email".to_owned()],
            priority: pb::Priority::High.into(),
        };
        let rule = rule_from_proto(proto.clone()).unwrap();
        assert_eq!(rule.delay, Some(Duration::from_secs(3600)));
        rule.validate().unwrap();
        let back = rule_entry(Entry {
            name: rule.name.clone(),
            definition: rule,
            source: Source::File,
            problem: None,
        });
        assert_eq!(back.rule.unwrap(), proto);
        assert_eq!(back.source, i32::from(pb::Source::ConfigFile));
    }

    #[test]
    fn a_condition_without_op_or_with_bad_json_is_refused() {
        let rule = |condition: pb::Condition| pb::Rule {
            name: "r".to_owned(),
            when: vec![condition],
            ..Default::default()
        };
        let message = rule_from_proto(rule(pb::Condition {
            property: "x".to_owned(),
            ..Default::default()
        }))
        .unwrap_err()
        .to_string();
        assert!(message.starts_with("rule.when[0].op:"), "{message}");
        let message = rule_from_proto(rule(pb::Condition {
            property: "x".to_owned(),
            op: pb::ConditionOp::Eq.into(),
            value_json: "{nope".to_owned(),
        }))
        .unwrap_err()
        .to_string();
        assert!(message.starts_with("rule.when[0].value_json:"), "{message}");
    }
}
