//! End-to-end tests of Nudge against the real programs.
//!
//! # Layout
//!
//! * `tests/e2e.rs` — the one integration-test binary: every test starts real
//!   `nudge-agent` and `nudge-control-plane` processes (built beforehand by
//!   `cargo build --bins`) on free loopback ports with fresh data directories,
//!   drives them over HTTP and checks what issue 2 promises.
//! * `tests/support/` — the harness: finding the binaries, starting, killing
//!   (SIGKILL, SIGTERM) and restarting processes on the same ports and data,
//!   load generation, and reading metrics and stored events.
//! * `python/segment_client.py` — a real Segment client
//!   (`segment-analytics-python`) pointed at the agent; `scripts/test`
//!   installs it into `.venv`.
//!
//! The library itself is empty: the tests talk to the programs only through
//! their public interfaces (HTTP intake, admin ports, the admin API).
