//! End-to-end tests and the benchmark of Nudge, against the real programs.
//!
//! # Layout
//!
//! The library is the harness that both the tests and `nudge-bench` use: it
//! talks to the programs only through their public interfaces (HTTP intake,
//! admin ports, the control plane's admin API), exactly as an operator would.
//!
//! * [`binaries`] — finding `nudge-agent` and `nudge-control-plane` in
//!   `target/{debug,release}` (honouring `CARGO_TARGET_DIR`).
//! * [`ports`] — free loopback ports that stay usable across restarts.
//! * [`postgres`] — a fresh PostgreSQL database per test on the server
//!   `scripts/test` starts (`NUDGE_TEST_DATABASE_URL`).
//! * [`process`] — one program instance: spawn with a log file, wait for
//!   `/readyz`, SIGKILL, SIGTERM, restart on the same ports and data, kill on
//!   drop.
//! * [`setup`] — what all instances of a run share (binaries, data parent,
//!   admin token, default settings); [`agent`] and [`control_plane`] — typed
//!   handles built from it, with their settings and admin helpers.
//! * [`http`] — the plain HTTP client for the harness's own requests.
//! * [`metrics`] — reading a value out of a Prometheus `/metrics` scrape.
//! * [`bench`](mod@bench) — `nudge-bench`'s options, load generator, baseline server,
//!   scenarios and report (`src/bin/nudge-bench.rs` only calls it).
//!
//! Outside the library:
//!
//! * `tests/e2e.rs` — the one integration-test binary: every test starts its
//!   own programs (built beforehand by `cargo build --bins`) and checks what
//!   issue 2 promises; `tests/support/` holds what only the tests need (the
//!   suite's settings, a load generator that tracks acknowledged ids, the
//!   exactly-once check).
//! * `python/segment_client.py` — a real Segment client
//!   (`segment-analytics-python`) pointed at the agent; `scripts/test`
//!   installs it into `.venv`.
//!
//! Every fallible step returns [`Error`], whose message says what failed and,
//! where a program is involved, shows the end of its log: tests unwrap it,
//! the benchmark prints it and exits.

pub mod agent;
pub mod bench;
pub mod binaries;
pub mod control_plane;
pub mod http;
pub mod metrics;
pub mod openapi_contract;
pub mod peer;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod setup;

pub use agent::Agent;
pub use control_plane::ControlPlane;
pub use setup::Setup;

use std::fmt;

/// A harness step that failed, with a message fit for a person.
pub struct Error(String);

impl Error {
    pub fn new(message: impl Into<String>) -> Self {
        Error(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The message itself, so that a test's `unwrap()` prints it readably
/// (programs' log tails span many lines).
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}
