//! The settings every property test of this crate runs with: a bounded
//! number of cases, so the suite stays quick, and no seed files: a failure
//! found by a property test becomes a named unit test with its minimal
//! input instead.

use proptest::test_runner::Config;

/// `cases` cases, nothing persisted.
pub fn bounded(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}
