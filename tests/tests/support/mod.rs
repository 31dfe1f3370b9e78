//! What only the end-to-end tests need on top of the crate's harness: the
//! suite's [`setup`] (debug binaries, quick agent settings), generous waits,
//! the exactly-once check, running a program that must exit by itself, and
//! (in [`load`]) a load generator that keeps account of acknowledged ids.
//!
//! * Every wait polls towards a generous deadline: these tests check what
//!   happens, never how fast.
//! * Harness failures panic with the program's log tail; when a test panics,
//!   the tail of every running program's log is printed too (see
//!   `nudge_e2e::process`).

pub mod load;
// Used by the notification binaries (notify.rs, workflows.rs) only.
#[allow(dead_code)]
pub mod smtp;
// Used by the notification and replica binaries, not by e2e.rs.
#[allow(dead_code)]
pub mod webhook;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nudge_e2e::process::Process;
use nudge_e2e::{Agent, ControlPlane, Setup, binaries};
use serde_json::Value;

/// How long any eventual condition may take before the test fails. Generous:
/// two cores are shared by the whole suite and by other builds.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// The control plane's operator token in every test.
const ADMIN_TOKEN: &str = "e2e-admin-token";

/// The agent token every control plane accepts and every agent sends.
pub const AGENT_TOKEN: &str = "e2e-agent-token-0123456789";

/// Agent settings that keep the suite quick: short linger and retry delays,
/// so shipping resumes within moments of the control plane coming back.
const AGENT_DEFAULTS: &[(&str, &str)] = &[
    ("NUDGE_AGENT_BATCH_LINGER", "5ms"),
    ("NUDGE_AGENT_RETRY_INITIAL", "50ms"),
    ("NUDGE_AGENT_RETRY_MAX", "500ms"),
    ("NUDGE_AGENT_SHUTDOWN_GRACE", "5s"),
    ("NUDGE_AGENT_SEGMENT_BYTES", "1MiB"),
    ("NUDGE_AGENT_ID", "e2e-agent"),
];

/// The suite's setup: binaries built by `cargo build --bins`, fresh data
/// directories in the system's temp dir, [`AGENT_DEFAULTS`].
pub fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| Setup {
        agent_bin: binary("nudge-agent"),
        control_plane_bin: binary("nudge-control-plane"),
        data_parent: std::env::temp_dir(),
        keep_data: false,
        dir_prefix: "nudge-e2e-".into(),
        admin_token: ADMIN_TOKEN.into(),
        agent_token: AGENT_TOKEN.into(),
        agent_defaults: AGENT_DEFAULTS
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        common_env: vec![("NO_COLOR".into(), "1".into())],
        start_limit: DEADLINE,
    })
}

/// Where `cargo build --bins` put `name`.
pub fn binary(name: &str) -> PathBuf {
    binaries::locate(name, None, "debug")
        .unwrap_or_else(|error| panic!("{error}: run `cargo build --bins` first"))
}

/// Polls `check` until it holds; fails the test after `limit`.
pub async fn wait_until_within<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// [`wait_until_within`] the suite's [`DEADLINE`].
pub async fn wait_until<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_until_within(what, DEADLINE, check).await;
}

/// Waits until the notification's delivery on `channel` has status
/// `status`; returns it.
// Used by the notification binaries (notify.rs, workflows.rs) only.
#[allow(dead_code)]
pub async fn delivery_reaching(
    control_plane: &ControlPlane,
    notification: &str,
    channel: &str,
    status: &str,
) -> Value {
    let delivery = || async { control_plane.delivery(notification, channel).await.unwrap() };
    wait_until(
        &format!("the {channel} delivery of {notification} is {status}"),
        || async { delivery().await["status"] == status },
    )
    .await;
    delivery().await
}

/// Waits until the agent's outbox is empty and every id in `acked` is stored,
/// then checks that each stored id of `users` is stored exactly once and, when
/// `attempted` is given, that nothing was stored that no client sent.
/// Returns the stored ids.
pub async fn assert_delivered_exactly_once(
    control_plane: &ControlPlane,
    agent: &Agent,
    users: &[String],
    acked: &HashSet<String>,
    attempted: Option<&HashSet<String>>,
) -> HashMap<String, usize> {
    wait_until("the agent's outbox is empty", || async {
        agent.metric("nudge_agent_outbox_events").await.unwrap() == 0.0
    })
    .await;
    wait_until(
        "the control plane stores at least as many events as were acknowledged",
        || async { control_plane.stored_count().await.unwrap() >= acked.len() as u64 },
    )
    .await;
    let stored = control_plane.stored_ids(users).await.unwrap();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !stored.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events are not stored, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    let duplicated: Vec<(&String, &usize)> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "{} ids stored more than once, e.g. {:?}",
        duplicated.len(),
        &duplicated[..duplicated.len().min(5)]
    );
    if let Some(attempted) = attempted {
        let unknown: Vec<&String> = stored
            .keys()
            .filter(|id| !attempted.contains(*id))
            .collect();
        assert!(
            unknown.is_empty(),
            "stored ids that no client sent: {:?}",
            &unknown[..unknown.len().min(5)]
        );
    }
    let total = control_plane.stored_count().await.unwrap();
    assert_eq!(
        total,
        stored.len() as u64,
        "stats count differs from the events listed per user"
    );
    stored
}

/// Runs `program` with `env`, expecting it to exit by itself (a bad
/// setting): returns the exit status and what it printed. A program still
/// running after 30 s is killed and the test fails.
pub async fn run_to_exit(program: &Path, env: &[(&str, &str)]) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut process = Process::new(
        "bad-config",
        program.to_path_buf(),
        dir.path().join("output.log"),
    )
    .with_env([("NO_COLOR", "1")])
    .with_env(env.iter().copied());
    process.spawn().unwrap();
    let Some(status) = process.wait_exit(Duration::from_secs(30)).await else {
        panic!(
            "{} did not exit\n{}",
            program.display(),
            process.log_tail(40)
        );
    };
    (status, process.log_text())
}

/// The workspace's root directory.
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A test tool that `scripts/test` installs: the path in `env_var` if set,
/// else `default` below the workspace. Fails (never skips) when missing.
pub fn installed_tool(env_var: &str, default: &str, what: &str) -> PathBuf {
    let path = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join(default));
    assert!(
        path.exists(),
        "{} not found: run `scripts/test` (it installs {what}) or set {env_var}",
        path.display()
    );
    path
}

/// A control plane running the engine config that `toml` writes (given the
/// control plane's own HTTP base URL, for `public_url`; the file is kept
/// as long as the returned dir) and an agent shipping to it.
// Used by the notification binaries (notify.rs, push.rs), not by e2e.rs.
#[allow(dead_code)]
pub async fn start_with_engine_config(
    toml: impl FnOnce(&str) -> String,
) -> (ControlPlane, Agent, tempfile::TempDir) {
    start_with_engine_config_and_env(toml, &[]).await
}

/// [`start_with_engine_config`] with more `NUDGE_CP_*` settings for the
/// control plane (e.g. a user-token secret).
#[allow(dead_code)]
pub async fn start_with_engine_config_and_env(
    toml: impl FnOnce(&str) -> String,
    env: &[(&str, &str)],
) -> (ControlPlane, Agent, tempfile::TempDir) {
    let config = tempfile::tempdir().unwrap();
    let path = config.path().join("nudge.toml");
    let control_plane = ControlPlane::new(setup()).unwrap();
    std::fs::write(&path, toml(&format!("http://{}", control_plane.http))).unwrap();
    let mut control_plane = control_plane
        .with_env([("NUDGE_CP_CONFIG", path.to_str().unwrap())])
        .with_env(env.iter().copied());
    control_plane.start().await.unwrap();
    let agent = Agent::started(setup(), &control_plane.grpc_url(), &[])
        .await
        .unwrap();
    (control_plane, agent, config)
}

/// A tmpfs mounted for one test and unmounted when dropped: a small disk
/// that a test can fill to the brim.
pub struct Tmpfs {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "8m"); `None`, after saying why on
    /// stderr, where mounting is not permitted (it needs root or
    /// CAP_SYS_ADMIN), so the calling test can skip.
    #[allow(dead_code)] // used by e2e.rs only
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output();
        match mounted {
            Ok(output) if output.status.success() => Some(Tmpfs { path, _dir: dir }),
            Ok(output) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
                None
            }
            Err(error) => {
                eprintln!("SKIPPED: cannot run mount: {error}");
                None
            }
        }
    }

    /// Writes a file until the file system refuses another byte; returns
    /// its path (delete it to give the space back).
    #[allow(dead_code)] // used by e2e.rs only
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        for chunk in [64 << 10, 4 << 10, 512, 1] {
            let bytes = vec![0u8; chunk];
            while file.write_all(&bytes).is_ok() {}
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a program still holding files there must not keep it mounted.
        let unmounted = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
        if !matches!(unmounted, Ok(status) if status.success()) {
            eprintln!("could not unmount {}", self.path.display());
        }
    }
}
