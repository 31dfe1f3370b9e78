//! The end-to-end harness: real `nudge-agent` and `nudge-control-plane`
//! processes on free loopback ports, each with a fresh data directory.
//!
//! * Binaries come from the target directory of this test executable (so
//!   `CARGO_TARGET_DIR` and the profile are honoured); `cargo build --bins`
//!   must have run first.
//! * A process's stdout and stderr go to a log file in its data directory; a
//!   restart appends to the same file. When a test panics, the tail of every
//!   log is printed, so a failure shows what the programs said.
//! * Processes are SIGKILLed when their handle is dropped; [`Process::kill`]
//!   (SIGKILL) and [`Process::terminate`] (SIGTERM) keep ports and data so
//!   [`Process::start`] can bring the same instance back.
//! * Every wait polls towards a generous deadline: these tests check what
//!   happens, never how fast.

pub mod load;

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// How long any eventual condition may take before the test fails. Generous:
/// two cores are shared by the whole suite and by other builds.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// The control plane's operator token in every test.
pub const ADMIN_TOKEN: &str = "e2e-admin-token";

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

/// Where `cargo build --bins` put `name`.
pub fn binary(name: &str) -> PathBuf {
    let mut candidates = Vec::new();
    // target/<profile>/deps/e2e-<hash> → target/<profile>/<name>
    if let Some(profile_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
    {
        candidates.push(profile_dir.join(name));
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(target).join("debug").join(name));
    }
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/debug")
            .join(name),
    );
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!("binary `{name}` not found (looked in {candidates:?}): run `cargo build --bins` first")
        })
}

/// A loopback port nothing listens on, below the kernel's ephemeral range
/// (32768+), so neither another test's `bind(0)` nor an outgoing connection's
/// source port can take it while one of our processes is down for a restart.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let random = RandomState::new();
    for attempt in 0u64.. {
        let port = 20_000 + (random.hash_one(attempt) % 12_000) as u16;
        let mut handed_out = HANDED_OUT.lock().unwrap();
        if handed_out.contains(&port) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            handed_out.push(port);
            return port;
        }
    }
    unreachable!()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// One program instance: how to start it, and the running child if any.
pub struct Process {
    name: String,
    program: PathBuf,
    env: Vec<(String, String)>,
    /// stdout + stderr of every start, appended, shown when a test fails.
    log: PathBuf,
    /// `/readyz` of the admin port, polled after each start.
    readyz: String,
    child: Option<Child>,
    starts: u32,
}

impl Process {
    fn new(
        name: &str,
        program: PathBuf,
        env: Vec<(String, String)>,
        log: PathBuf,
        readyz: String,
    ) -> Self {
        Process {
            name: name.into(),
            program,
            env,
            log,
            readyz,
            child: None,
            starts: 0,
        }
    }

    /// Spawns the program without waiting for it to be ready.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log file");
        writeln!(
            log,
            "===== e2e: start #{} of {} =====",
            self.starts, self.name
        )
        .unwrap();
        let mut command = Command::new(&self.program);
        // Settings from the developer's shell must not leak into the tests.
        for (key, _) in std::env::vars() {
            if key.starts_with("NUDGE_") {
                command.env_remove(key);
            }
        }
        command
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child =
            Some(command.spawn().unwrap_or_else(|error| {
                panic!("cannot start {}: {error}", self.program.display())
            }));
    }

    /// Spawns the program and waits until its `/readyz` answers 200.
    pub async fn start(&mut self) {
        self.spawn();
        let client = http_client();
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                panic!(
                    "{} exited during start-up with {status}\n{}",
                    self.name,
                    self.log_tail(60)
                );
            }
            let ready = client
                .get(&self.readyz)
                .send()
                .await
                .map(|r| r.status().is_success());
            if ready.unwrap_or(false) {
                return;
            }
            if started.elapsed() > DEADLINE {
                panic!(
                    "{} not ready after {DEADLINE:?}\n{}",
                    self.name,
                    self.log_tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("process is running").id()
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait up to `limit` for the exit. Returns the status and
    /// how long the exit took; panics if the process outlives `limit`.
    pub async fn terminate(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let pid = self.pid().to_string();
        let sent = Instant::now();
        let kill = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill(1)");
        assert!(kill.success(), "kill -TERM {pid} failed");
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return (status, sent.elapsed());
            }
            if sent.elapsed() > limit {
                panic!(
                    "{} still running {limit:?} after SIGTERM\n{}",
                    self.name,
                    self.log_tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().expect("wait for child")
    }

    pub fn log_text(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        format!(
            "----- last {} lines of {} -----\n{}",
            all.len() - from,
            self.log.display(),
            all[from..].join("\n")
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(80));
        }
    }
}

/// A control plane on its own ports and data directory.
pub struct ControlPlane {
    pub process: Process,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    client: reqwest::Client,
    // Declared last: removed after the process is gone.
    _dir: TempDir,
}

impl ControlPlane {
    /// Picks ports and a data directory; nothing runs until [`Self::start`],
    /// so an agent can be pointed at a control plane that is down.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("nudge-e2e-cp-")
            .tempdir()
            .unwrap();
        let (grpc, http, admin) = (
            loopback(free_port()),
            loopback(free_port()),
            loopback(free_port()),
        );
        let env = vec![
            ("NUDGE_CP_GRPC_LISTEN".into(), grpc.to_string()),
            ("NUDGE_CP_HTTP_LISTEN".into(), http.to_string()),
            ("NUDGE_CP_ADMIN_LISTEN".into(), admin.to_string()),
            (
                "NUDGE_CP_DATA_DIR".into(),
                dir.path().join("data").display().to_string(),
            ),
            ("NUDGE_CP_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
        ];
        let process = Process::new(
            "nudge-control-plane",
            binary("nudge-control-plane"),
            env,
            dir.path().join("control-plane.log"),
            format!("http://{admin}/readyz"),
        );
        ControlPlane {
            process,
            grpc,
            http,
            admin,
            client: http_client(),
            _dir: dir,
        }
    }

    pub async fn started() -> Self {
        let mut control_plane = Self::new();
        control_plane.start().await;
        control_plane
    }

    pub async fn start(&mut self) {
        self.process.start().await;
    }

    /// What agents put in `NUDGE_AGENT_CONTROL_PLANE`.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub async fn metrics(&self) -> String {
        get_text(&self.client, &format!("http://{}/metrics", self.admin)).await
    }

    /// Total events stored (`GET /v1/admin/stats`).
    pub async fn stored_count(&self) -> u64 {
        let stats = self.admin_get("/v1/admin/stats").await;
        stats["events"]
            .as_u64()
            .unwrap_or_else(|| panic!("stats without `events`: {stats}"))
    }

    /// Every stored event of `user`, following the `next` cursor.
    pub async fn events_for_user(&self, user: &str) -> Vec<Value> {
        let mut events = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!("/v1/admin/events?user_id={user}&limit=1000");
            if let Some(cursor) = &after {
                path.push_str(&format!("&after={cursor}"));
            }
            let page = self.admin_get(&path).await;
            let batch = page["events"]
                .as_array()
                .unwrap_or_else(|| panic!("no `events` in {page}"));
            events.extend(batch.iter().cloned());
            match &page["next"] {
                Value::Null => return events,
                Value::String(cursor) => after = Some(cursor.clone()),
                Value::Number(cursor) => after = Some(cursor.to_string()),
                other => panic!("unexpected `next`: {other}"),
            }
            assert!(
                !batch.is_empty(),
                "a page with no events but a next cursor: {page}"
            );
        }
    }

    /// How many times each id is stored, over the events of `users`.
    pub async fn stored_ids(&self, users: &[String]) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for user in users {
            for event in self.events_for_user(user).await {
                let id = event["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("event without id: {event}"));
                *counts.entry(id.to_owned()).or_insert(0) += 1;
            }
        }
        counts
    }

    async fn admin_get(&self, path: &str) -> Value {
        let url = format!("http://{}{path}", self.http);
        let reply = self
            .client
            .get(&url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = reply.status();
        let body = reply.text().await.unwrap_or_default();
        assert!(status.is_success(), "GET {url}: {status}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {body}"))
    }
}

/// An agent on its own ports and data directory.
pub struct Agent {
    pub process: Process,
    pub intake: SocketAddr,
    pub admin: SocketAddr,
    client: reqwest::Client,
    _dir: TempDir,
}

impl Agent {
    /// An agent shipping to `control_plane` (a `http://host:port` URL), with
    /// the suite's quick defaults overridden by `env`. Not started yet.
    pub fn new(control_plane: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("nudge-e2e-agent-")
            .tempdir()
            .unwrap();
        let (intake, admin) = (loopback(free_port()), loopback(free_port()));
        let mut settings: Vec<(String, String)> = vec![
            ("NUDGE_AGENT_LISTEN".into(), intake.to_string()),
            ("NUDGE_AGENT_ADMIN_LISTEN".into(), admin.to_string()),
            (
                "NUDGE_AGENT_DATA_DIR".into(),
                dir.path().join("data").display().to_string(),
            ),
            ("NUDGE_AGENT_CONTROL_PLANE".into(), control_plane.into()),
        ];
        for (key, value) in AGENT_DEFAULTS.iter().chain(env) {
            settings.retain(|(k, _)| k != key);
            settings.push(((*key).into(), (*value).into()));
        }
        let process = Process::new(
            "nudge-agent",
            binary("nudge-agent"),
            settings,
            dir.path().join("agent.log"),
            format!("http://{admin}/readyz"),
        );
        Agent {
            process,
            intake,
            admin,
            client: http_client(),
            _dir: dir,
        }
    }

    pub async fn started(control_plane: &str, env: &[(&str, &str)]) -> Self {
        let mut agent = Self::new(control_plane, env);
        agent.start().await;
        agent
    }

    pub async fn start(&mut self) {
        self.process.start().await;
    }

    /// `http://<intake>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.intake)
    }

    pub async fn metrics(&self) -> String {
        get_text(&self.client, &format!("http://{}/metrics", self.admin)).await
    }

    /// The value of an unlabelled metric (gauges, counters); 0 when absent.
    pub async fn metric(&self, name: &str) -> f64 {
        metric_value(&self.metrics().await, name, None).unwrap_or(0.0)
    }

    /// `POST` JSON to the intake.
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        post_json(&self.client, &self.url(path), body)
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }
}

/// A client for the tests' own requests: plain HTTP, bounded waits.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

/// What the agent answered.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Value,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The error body's `code` (Segment's error shape).
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
}

pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
) -> Result<Reply, reqwest::Error> {
    post_bytes(
        client,
        url,
        "application/json",
        serde_json::to_vec(body).unwrap(),
    )
    .await
}

pub async fn post_bytes(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<Reply, reqwest::Error> {
    let reply = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await?;
    let status = reply.status().as_u16();
    let retry_after = reply
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap_or("<not ascii>").to_owned());
    let text = reply.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Reply {
        status,
        retry_after,
        body,
    })
}

async fn get_text(client: &reqwest::Client, url: &str) -> String {
    let reply = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(reply.status().is_success(), "GET {url}: {}", reply.status());
    reply.text().await.unwrap()
}

/// Sum of the samples of metric `name` (exact name, not `_bucket` and the
/// like) whose labels include `label` (`reason="outbox_full"`), or all its
/// samples when `label` is `None`. `None` when no sample matches.
pub fn metric_value(text: &str, name: &str, label: Option<&str>) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = match rest.chars().next() {
            Some('{') => {
                let end = rest.find('}')?;
                (&rest[1..end], &rest[end + 1..])
            }
            Some(' ') => ("", rest),
            _ => continue,
        };
        let wanted = label.is_none_or(|wanted| labels.split(',').any(|l| l.trim() == wanted));
        if !wanted {
            continue;
        }
        let value: f64 = value.split_whitespace().next()?.parse().ok()?;
        found = Some(found.unwrap_or(0.0) + value);
    }
    found
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
        agent.metric("nudge_agent_outbox_events").await == 0.0
    })
    .await;
    wait_until(
        "the control plane stores at least as many events as were acknowledged",
        || async { control_plane.stored_count().await >= acked.len() as u64 },
    )
    .await;
    let stored = control_plane.stored_ids(users).await;
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
    let total = control_plane.stored_count().await;
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
    let log = dir.path().join("output.log");
    let mut process = Process::new(
        "bad-config",
        program.to_path_buf(),
        env.iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        log,
        String::new(),
    );
    process.spawn();
    let started = Instant::now();
    loop {
        if let Some(status) = process.try_wait() {
            process.child = None;
            return (status, process.log_text());
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} did not exit\n{}",
            program.display(),
            process.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The workspace's root directory.
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}
