//! One program instance: how to start it, and the running child if any.
//! Promises:
//!
//! * Settings from the caller's shell (`NUDGE_*`) never leak into the
//!   program; it sees only the settings given here.
//! * stdout and stderr go to one log file; every start appends to it behind a
//!   banner, so a restarted instance keeps one history. Errors show its tail.
//! * [`Process::kill`] (SIGKILL) and [`Process::terminate`] (SIGTERM) keep
//!   the settings, so [`Process::start`] brings the same instance back on the
//!   same ports and data.
//! * A process is SIGKILLed when its handle is dropped; when that happens
//!   during a panic (a failing test), the tail of its log is printed.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, http};

/// How often start-up and exits are polled.
const READY_POLL: Duration = Duration::from_millis(50);
const EXIT_POLL: Duration = Duration::from_millis(20);
/// Log lines shown in an error, and when a handle is dropped in a panic.
const ERROR_TAIL: usize = 60;
const PANIC_TAIL: usize = 80;

pub struct Process {
    /// For messages and the log banner.
    name: String,
    program: PathBuf,
    /// Everything the program sees; later entries win.
    env: Vec<(String, String)>,
    /// stdout + stderr of every start, appended.
    log: PathBuf,
    /// The admin port whose `/readyz` [`Process::start`] polls.
    admin: Option<SocketAddr>,
    child: Option<Child>,
    /// Numbers the banners in the log.
    starts: u32,
}

impl Process {
    /// An instance of `program` logging to `log`; nothing runs yet.
    pub fn new(name: &str, program: PathBuf, log: PathBuf) -> Self {
        Process {
            name: name.into(),
            program,
            env: Vec::new(),
            log,
            admin: None,
            child: None,
            starts: 0,
        }
    }

    /// Adds settings; a key given again replaces the earlier value.
    pub fn with_env<K, V>(mut self, env: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        for (key, value) in env {
            let key = key.into();
            self.env.retain(|(k, _)| *k != key);
            self.env.push((key, value.into()));
        }
        self
    }

    /// Sets one setting in place (for the next start); replaces an earlier
    /// value.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Removes a setting (for the next start), so the program sees it unset.
    pub fn remove_env(&mut self, key: &str) {
        self.env.retain(|(k, _)| k != key);
    }

    /// The admin port whose `/readyz` says the program is ready.
    pub fn with_readyz(mut self, admin: SocketAddr) -> Self {
        self.admin = Some(admin);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Spawns the program without waiting for it to be ready.
    pub fn spawn(&mut self) -> Result<(), Error> {
        if self.child.is_some() {
            return Err(Error::new(format!("{} is already running", self.name)));
        }
        self.starts += 1;
        let cannot =
            |e: std::io::Error| Error::new(format!("cannot start {}: {e}", self.program.display()));
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(cannot)?;
        writeln!(
            log,
            "===== nudge-e2e: start #{} of {} =====",
            self.starts, self.name
        )
        .map_err(cannot)?;
        let mut command = Command::new(&self.program);
        for (key, _) in std::env::vars() {
            if key.starts_with("NUDGE_") {
                command.env_remove(key);
            }
        }
        command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(cannot)?)
            .stderr(log);
        self.child = Some(command.spawn().map_err(cannot)?);
        Ok(())
    }

    /// Spawns the program and waits until its `/readyz` answers 2xx; fails
    /// if it exits first or is not ready within `limit`.
    pub async fn start(&mut self, limit: Duration) -> Result<(), Error> {
        self.spawn()?;
        let Some(admin) = self.admin else {
            return Ok(());
        };
        let client = http::client();
        let readyz = format!("http://{admin}/readyz");
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return Err(self.failure(&format!("exited during start-up with {status}")));
            }
            let ready = client
                .get(&readyz)
                .send()
                .await
                .map(|r| r.status().is_success());
            if ready.unwrap_or(false) {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(self.failure(&format!("not ready after {limit:?}")));
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// The running child's pid.
    ///
    /// # Panics
    /// When the process is not running: a harness bug.
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
    /// how long the exit took; fails if the process outlives `limit`.
    pub async fn terminate(&mut self, limit: Duration) -> Result<(ExitStatus, Duration), Error> {
        let pid = self.pid().to_string();
        let sent = Instant::now();
        let kill = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .map_err(|e| Error::new(format!("run kill(1): {e}")))?;
        if !kill.success() {
            return Err(Error::new(format!("kill -TERM {pid} failed")));
        }
        match self.wait_exit(limit).await {
            Some(status) => Ok((status, sent.elapsed())),
            None => Err(self.failure(&format!("still running {limit:?} after SIGTERM"))),
        }
    }

    /// Waits up to `limit` for the process to exit by itself; `None` if it
    /// is still running then (it is left running).
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return Some(status);
            }
            if started.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(EXIT_POLL).await;
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Everything the program printed, over all starts.
    pub fn log_text(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` of the log, behind a header naming the file.
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

    fn failure(&self, what: &str) -> Error {
        Error::new(format!(
            "{} {what}\n{}",
            self.name,
            self.log_tail(ERROR_TAIL)
        ))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(PANIC_TAIL));
        }
    }
}
