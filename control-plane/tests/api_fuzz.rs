//! An outside fuzzer holds the server to its OpenAPI document: schemathesis
//! (PyPI, property-based, run from the test venv's python,
//! `NUDGE_TEST_PYTHON`, which `scripts/test` builds) reads `/openapi.json`
//! from the real `nudge-control-plane` binary and sends every operation
//! schema-valid and schema-invalid requests, once with the admin token
//! (operator and public routes) and once with a user's token (`/v1/me/…`).
//!
//! Passing means schemathesis found no 5xx and no mismatch with every
//! check it has: undocumented statuses or content types, answers that
//! break their schema, schema-valid input refused or invalid input
//! accepted, missing required headers accepted, and more. On failure the
//! test prints schemathesis' report, with a `curl` to reproduce each case.
//!
//! Bounded and deterministic: a fixed number of examples per operation and
//! schemathesis' deterministic generation (no random seed), so a run takes
//! a minute or two and fails the same way every time. A longer run by hand:
//! the README's "HTTP API reference (OpenAPI)". The settings both share
//! are in `tests/api_fuzz/` (`schemathesis.toml`, `hooks.py`).
//!
//! Once per storage engine: embedded SQLite, and PostgreSQL (a fresh
//! database on `NUDGE_TEST_DATABASE_URL`, which `scripts/test` starts),
//! since some mistakes only show on one (PostgreSQL refuses NUL in text).
//!
//! Skipped, saying so, only when `NUDGE_TEST_PYTHON` is not set; a venv
//! without schemathesis fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Map, json};

use nudge_control_plane::devices::{NewDevice, Platform};
use nudge_control_plane::event::{Event, EventBody};
use nudge_control_plane::http::user_auth::UserTokenSecret;
use nudge_control_plane::inbox::InboxItem;
use nudge_control_plane::storage::{DatabaseSettings, StorageMetrics, Stores};

#[macro_use]
mod support;
use support::Backend;

const ADMIN: &str = "fuzz-admin-token-0123456789";
const SECRET: &str = "the-app-backend-shares-this-32-byte-secret";
const USER: &str = "u1";
/// Examples per operation and phase: enough to reach every parameter's
/// edge cases, few enough for ~1–3 minutes on two cores (both engines).
const EXAMPLES: &str = "100";

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api_fuzz")
}

/// A free loopback port (the binary binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The id of the `n`th seeded inbox item.
fn item_id(n: u64) -> String {
    format!("0190a000-0000-7000-8000-{n:012}")
}

/// Data for the routes that read ids to find something: the user's inbox,
/// a device and events for the activity feed. Written to the database the
/// binary then opens.
async fn seed(settings: &DatabaseSettings, dir: &Path) {
    let stores = Stores::open(settings, dir, StorageMetrics::new())
        .await
        .unwrap();
    let now = Timestamp::now();
    for n in 1..=6 {
        let item = InboxItem {
            id: item_id(n),
            notification_id: format!("n{n}"),
            notification_type: if n % 2 == 0 { "invoice" } else { "comment" }.into(),
            category: Some(if n % 2 == 0 { "billing" } else { "social" }.into()),
            title: format!("item {n}"),
            body: format!("body {n}"),
            data: json!({"n": n}),
            created_at: now,
            seen_at: None,
            read_at: None,
            archived_at: None,
            snoozed_until: None,
        };
        stores.inbox.add(USER, &item).await.unwrap();
    }
    let device = NewDevice {
        platform: Platform::Fcm,
        token: Some("fuzz-device-token".into()),
        subscription: None,
        label: Some("Fuzz phone".into()),
    };
    stores.devices.register(USER, &device, now).await.unwrap();
    let events = (0..4)
        .map(|n| Event {
            id: format!("fuzz-event-{n}"),
            user_id: Some(USER.into()),
            anonymous_id: None,
            timestamp: Some(now),
            sent_at: None,
            received_at: None,
            ingested_at: now,
            agent_id: "fuzz-agent".into(),
            write_key: None,
            context: Map::new(),
            integrations: Map::new(),
            body: EventBody::Track {
                event: "view".into(),
                properties: json!({"product_id": format!("p{n}")})
                    .as_object()
                    .unwrap()
                    .clone(),
            },
        })
        .collect();
    stores.events.ingest(events).await.unwrap();
    stores.close().await.unwrap();
}

/// The repository's settings plus the seeded inbox ids, so operations on
/// one item meet it (schemathesis still fuzzes every other parameter).
/// Devices need no such help: schemathesis links `POST …/devices` to the
/// routes that take the id it answers (and a pinned id would be gone once
/// a `DELETE` took it).
fn config_file(dir: &Path) -> PathBuf {
    let mut config = std::fs::read_to_string(fuzz_dir().join("schemathesis.toml")).unwrap();
    for (path, n) in [
        ("/v1/me/notifications/{id}", 1),
        ("/v1/me/notifications/{id}/{action}", 2),
    ] {
        config.push_str(&format!(
            "\n[[operations]]\ninclude-path = \"{path}\"\nparameters = {{ \"path.id\" = \"{}\" }}\n",
            item_id(n)
        ));
    }
    let file = dir.join("schemathesis.toml");
    std::fs::write(&file, config).unwrap();
    file
}

/// `nudge-control-plane` on free loopback ports, killed on drop.
struct ControlPlane {
    /// Held for its `kill_on_drop`.
    _child: tokio::process::Child,
    base: String,
}

impl ControlPlane {
    /// On `database` (a `NUDGE_CP_DATABASE_URL`), or SQLite in `dir`.
    async fn start(dir: &Path, database: Option<&str>) -> Self {
        let (http, admin, grpc) = (free_port(), free_port(), free_port());
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_nudge-control-plane"));
        if let Some(url) = database {
            command.env("NUDGE_CP_DATABASE_URL", url);
        }
        let child = command
            .env("NUDGE_CP_DATA_DIR", dir)
            .env("NUDGE_CP_HTTP_LISTEN", format!("127.0.0.1:{http}"))
            .env("NUDGE_CP_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
            .env("NUDGE_CP_GRPC_LISTEN", format!("127.0.0.1:{grpc}"))
            .env("NUDGE_CP_ADMIN_TOKEN", ADMIN)
            .env("NUDGE_CP_USER_TOKEN_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start nudge-control-plane");
        let base = format!("http://127.0.0.1:{http}");
        let client = reqwest::Client::new();
        for _ in 0..300 {
            let ready = client.get(format!("{base}/healthz")).send().await;
            if ready.is_ok_and(|reply| reply.status().is_success()) {
                return ControlPlane {
                    _child: child,
                    base,
                };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("nudge-control-plane did not answer /healthz within 30 s");
    }
}

/// One schemathesis run; its report when it found anything.
async fn schemathesis(
    python: &Path,
    dir: &Path,
    config: &Path,
    base: &str,
    token: &str,
    selection: [&str; 2],
) -> Result<String, String> {
    let output = tokio::process::Command::new(python)
        .args([
            "-c",
            "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
            "--config-file",
        ])
        .arg(config)
        .arg("run")
        .arg(format!("{base}/openapi.json"))
        .args(["--url", base])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(selection)
        // Deterministic generation keeps no example database, and the
        // scratch working directory (below) holds the `.schemathesis/`
        // cache of failures: nothing from an earlier run changes this one.
        .args(["--max-examples", EXAMPLES, "--generation-deterministic"])
        // One worker: schemathesis' threads can trip CPython 3.11's
        // `ast.parse` (hypothesis describes lambdas with it), "AST
        // constructor recursion depth mismatch", a crash unrelated to the
        // server that would make the test flaky.
        .args(["--workers", "1", "--no-color", "--continue-on-failure"])
        .env("SCHEMATHESIS_HOOKS", fuzz_dir().join("hooks.py"))
        .current_dir(dir)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run schemathesis");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(report)
    } else {
        Err(report)
    }
}

/// Both engines in one test, one after the other: two fuzzers at once on
/// two cores would only slow each other down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_mismatch() {
    let Some(python) = std::env::var_os("NUDGE_TEST_PYTHON").map(PathBuf::from) else {
        eprintln!(
            "api_fuzz skipped: NUDGE_TEST_PYTHON is not set; run scripts/test (it builds \
             .venv with schemathesis) or point it at a python with schemathesis installed"
        );
        return;
    };
    let importable = std::process::Command::new(&python)
        .args(["-c", "import schemathesis"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        importable,
        "{} cannot import schemathesis: run scripts/test once (it installs it into .venv)",
        python.display()
    );

    let mut failures = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        failures.extend(fuzz_on(&python, backend).await);
    }
    assert!(
        failures.is_empty(),
        "schemathesis found mismatches between control-plane/openapi.json and the server:\n{}",
        failures.join("\n")
    );
}

/// A control plane on `backend`, fuzzed with both tokens; the reports of
/// the runs that found something.
async fn fuzz_on(python: &Path, backend: Backend) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let database = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(nudge_e2e::postgres::fresh_database().await),
    };
    seed(
        &support::fresh_settings_at(database.as_deref(), dir.path()),
        dir.path(),
    )
    .await;
    let config = config_file(dir.path());
    let control_plane = ControlPlane::start(dir.path(), database.as_deref()).await;
    let user_token = SECRET.parse::<UserTokenSecret>().unwrap().sign(&json!({
        "sub": USER,
        "iat": Timestamp::now().as_second(),
        "exp": Timestamp::now().as_second() + 3600,
    }));

    let runs = [
        ("admin token", ADMIN, ["--exclude-path-regex", "^/v1/me/"]),
        (
            "user token",
            user_token.as_str(),
            ["--include-path-regex", "^/v1/me/"],
        ),
    ];
    let mut failures = Vec::new();
    for (who, token, selection) in runs {
        let started = std::time::Instant::now();
        let result = schemathesis(
            python,
            dir.path(),
            &config,
            &control_plane.base,
            token,
            selection,
        )
        .await;
        eprintln!(
            "schemathesis with the {who} on {backend:?}: {:.0?}",
            started.elapsed()
        );
        match result {
            // The totals: "N generated, N passed, M skipped" and the verdict.
            Ok(report) => report
                .lines()
                .filter(|line| line.contains("generated,") || line.starts_with('='))
                .for_each(|line| eprintln!("{}", line.trim())),
            Err(report) => {
                failures.push(format!("=== with the {who} on {backend:?} ===\n{report}"))
            }
        }
    }
    failures
}
