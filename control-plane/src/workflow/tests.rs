use std::collections::BTreeMap;

use super::*;

fn channel(channel: ChannelKind) -> Step {
    Step {
        channel: Some(channel),
        ..Step::default()
    }
}

fn wait(text: &str) -> Step {
    Step {
        wait: Some(text.to_owned()),
        ..Step::default()
    }
}

fn wait_until(text: &str) -> Step {
    Step {
        wait_until: Some(text.to_owned()),
        ..Step::default()
    }
}

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn field_of(steps: &[Step]) -> String {
    check(steps).unwrap_err().field
}

#[test]
fn check_names_the_step_and_field_at_fault() {
    let both = Step {
        channel: Some(ChannelKind::Email),
        wait: Some("1h".into()),
        ..Step::default()
    };
    assert_eq!(field_of(&[channel(ChannelKind::InApp), both]), "steps[1]");
    assert_eq!(field_of(&[Step::default()]), "steps[0]");
    assert_eq!(
        field_of(&[channel(ChannelKind::InApp), wait("soon")]),
        "steps[1].wait"
    );
    assert_eq!(
        field_of(&[channel(ChannelKind::InApp), wait("0s")]),
        "steps[1].wait"
    );
    assert_eq!(
        field_of(&[channel(ChannelKind::InApp), wait("32d")]),
        "steps[1].wait"
    );
    for bad in ["9:00", "24:00", "09:60", "+9:00", "0900"] {
        assert_eq!(
            field_of(&[channel(ChannelKind::InApp), wait_until(bad)]),
            "steps[1].wait_until",
            "{bad}"
        );
    }
    let twice = [
        channel(ChannelKind::InApp),
        wait("1h"),
        channel(ChannelKind::InApp),
    ];
    let error = check(&twice).unwrap_err();
    assert_eq!(error.field, "steps[2].channel");
    assert!(error.message.contains("in_app"), "{}", error.message);
    let options_on_a_wait = Step {
        min_priority: Some(Priority::High),
        ..wait("1h")
    };
    assert_eq!(
        field_of(&[channel(ChannelKind::InApp), options_on_a_wait]),
        "steps[1].min_priority"
    );
    let always_and_unless = Step {
        always: true,
        unless: BTreeSet::from([Engagement::Opened]),
        ..channel(ChannelKind::Email)
    };
    assert_eq!(field_of(&[always_and_unless]), "steps[0].always");
    assert_eq!(field_of(&[wait("1h")]), "steps");
    assert_eq!(field_of(&vec![wait("1s"); MAX_STEPS + 1]), "steps");
    let too_long = [
        channel(ChannelKind::InApp),
        wait("30d"),
        wait_until("09:00"),
        wait_until("09:00"),
    ];
    assert_eq!(field_of(&too_long), "steps");
}

#[test]
fn a_workflow_of_every_kind_passes() {
    let steps = [
        channel(ChannelKind::InApp),
        wait("1h"),
        channel(ChannelKind::Email),
        wait_until("09:00"),
        Step {
            unless: BTreeSet::from([Engagement::Opened]),
            min_priority: Some(Priority::High),
            ..channel(ChannelKind::Sms)
        },
    ];
    check(&steps).unwrap();
    assert_eq!(
        channels(&steps),
        BTreeSet::from([ChannelKind::InApp, ChannelKind::Email, ChannelKind::Sms])
    );
}

#[test]
fn steps_read_from_toml_and_json_alike() {
    let toml_steps: BTreeMap<String, Vec<Step>> = toml::from_str(
        r#"
        steps = [
          { channel = "in_app" },
          { wait = "1h" },
          { channel = "email", unless = ["opened"], min_priority = "high" },
        ]
        "#,
    )
    .unwrap();
    let json: Vec<Step> = serde_json::from_value(serde_json::json!([
        { "channel": "in_app" },
        { "wait": "1h" },
        { "channel": "email", "unless": ["opened"], "min_priority": "high" },
    ]))
    .unwrap();
    assert_eq!(toml_steps["steps"], json);
    // Unknown keys are refused, not ignored.
    assert!(serde_json::from_value::<Step>(serde_json::json!({ "chanel": "email" })).is_err());
    // Written back without the unset options.
    assert_eq!(
        serde_json::to_value(&json[1]).unwrap(),
        serde_json::json!({ "wait": "1h" })
    );
}

#[test]
fn steps_are_timed_from_the_start_in_the_users_zone() {
    let steps = [
        channel(ChannelKind::InApp),
        wait("1h"),
        channel(ChannelKind::Email),
        wait_until("09:00"),
        Step {
            unless: BTreeSet::from([Engagement::Opened]),
            ..channel(ChannelKind::Sms)
        },
    ];
    let berlin = TimeZone::get("Europe/Berlin").unwrap();
    // 20:30 in Berlin (CEST) on 2024-06-10.
    let start = ts("2024-06-10T18:30:00Z");
    let planned = schedule(&steps, start, &berlin, Priority::Normal);
    assert_eq!(planned.len(), 3);
    assert_eq!(planned[0].channel, ChannelKind::InApp);
    assert_eq!(planned[0].at, start);
    assert_eq!(planned[0].gate, None, "before the first wait: no check");
    assert_eq!(planned[1].at, ts("2024-06-10T19:30:00Z"));
    assert_eq!(
        planned[1].gate,
        Some(StepGate {
            step: 3,
            unless: BTreeSet::from([Engagement::Read, Engagement::Clicked]),
        })
    );
    // The next 09:00 in Berlin after 21:30: the morning after.
    assert_eq!(planned[2].at, ts("2024-06-11T07:00:00Z"));
    assert_eq!(
        planned[2].gate.as_ref().unwrap().unless,
        BTreeSet::from([Engagement::Opened, Engagement::Read, Engagement::Clicked])
    );
    // The same steps in UTC: 09:00 UTC.
    let utc = schedule(&steps, start, &TimeZone::UTC, Priority::Normal);
    assert_eq!(utc[2].at, ts("2024-06-11T09:00:00Z"));
}

#[test]
fn wait_until_the_same_day_and_across_dst() {
    let steps = [wait_until("09:00"), channel(ChannelKind::Email)];
    let new_york = TimeZone::get("America/New_York").unwrap();
    // 07:00 EDT: 09:00 is later the same day.
    let planned = schedule(
        &steps,
        ts("2024-06-10T11:00:00Z"),
        &new_york,
        Priority::Normal,
    );
    assert_eq!(planned[0].at, ts("2024-06-10T13:00:00Z"));
    // Exactly 09:00: the next day's (strictly after).
    let planned = schedule(
        &steps,
        ts("2024-06-10T13:00:00Z"),
        &new_york,
        Priority::Normal,
    );
    assert_eq!(planned[0].at, ts("2024-06-11T13:00:00Z"));
    // Across the spring change (2024-03-10): 09:00 EST the day before,
    // 09:00 EDT after; the wall time stays, the offset follows.
    let planned = schedule(
        &steps,
        ts("2024-03-09T20:00:00Z"),
        &new_york,
        Priority::Normal,
    );
    assert_eq!(planned[0].at, ts("2024-03-10T13:00:00Z"));
    // A wall time inside the gap (02:30 does not exist that night)
    // resolves forward, to 03:30 EDT.
    let gap = [wait_until("02:30"), channel(ChannelKind::Email)];
    let planned = schedule(
        &gap,
        ts("2024-03-10T05:00:00Z"),
        &new_york,
        Priority::Normal,
    );
    assert_eq!(planned[0].at, ts("2024-03-10T07:30:00Z"));
}

#[test]
fn min_priority_and_always_shape_the_plan() {
    let steps = [
        channel(ChannelKind::InApp),
        wait("10m"),
        Step {
            always: true,
            ..channel(ChannelKind::Email)
        },
        Step {
            min_priority: Some(Priority::High),
            ..channel(ChannelKind::Sms)
        },
    ];
    let start = ts("2024-06-10T12:00:00Z");
    let normal = schedule(&steps, start, &TimeZone::UTC, Priority::Normal);
    let channels: Vec<ChannelKind> = normal.iter().map(|step| step.channel).collect();
    assert_eq!(channels, [ChannelKind::InApp, ChannelKind::Email]);
    assert_eq!(normal[1].gate, None, "always: sent whatever happened");
    let high = schedule(&steps, start, &TimeZone::UTC, Priority::High);
    assert_eq!(high.len(), 3);
    assert_eq!(high[2].at, ts("2024-06-10T12:10:00Z"));
    assert_eq!(high[2].gate.as_ref().unwrap().step, 4);
}
