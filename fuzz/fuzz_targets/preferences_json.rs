//! The preferences document of `PUT /v1/me/preferences` and the operator's
//! route (`control-plane/src/preferences`), at the level the routes call:
//! JSON into `UserPreferences`, then `validate`. Any body is accepted or
//! refused with a message; an accepted one round-trips through JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nudge_control_plane::preferences::{OperatorDefaults, TypeDefaults, UserPreferences};

fuzz_target!(|body: &[u8]| {
    let Ok(preferences) = serde_json::from_slice::<UserPreferences>(body) else {
        return;
    };
    let defaults = OperatorDefaults {
        types: [(
            "security".to_owned(),
            TypeDefaults {
                critical: true,
                ..TypeDefaults::default()
            },
        )]
        .into(),
    };
    if let Err(error) = preferences.validate(&defaults) {
        assert!(!error.to_string().is_empty());
        return;
    }
    let json = serde_json::to_string(&preferences).unwrap();
    let back: UserPreferences = serde_json::from_str(&json).expect("stored form reads back");
    assert_eq!(back, preferences, "{json}");
});
