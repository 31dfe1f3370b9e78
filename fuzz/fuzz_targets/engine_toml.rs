//! The engine's config file (`control-plane/src/engine_config.rs`, and the
//! types, rules and templates it loads): any text loads or is refused with
//! an error that starts with the file's name. Seed the corpus with
//! `control-plane/nudge.example.toml` so runs start from a valid file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nudge_control_plane::engine_config::EngineConfig;

fuzz_target!(|text: &str| {
    if let Err(error) = EngineConfig::from_toml(text, "nudge.toml") {
        let message = error.to_string();
        assert!(message.starts_with("nudge.toml: "), "{message}");
        assert!(message.len() > "nudge.toml: ".len(), "{message}");
    }
});
