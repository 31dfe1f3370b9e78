//! PostgreSQL for tests and the benchmark.
//!
//! * [`fresh_database`]: a new, empty database per caller on the server
//!   named by `NUDGE_TEST_DATABASE_URL` (which `scripts/test` starts for the
//!   run: a throwaway cluster on a free loopback port), so tests never see
//!   each other's rows. The first call in a test process drops the
//!   databases that processes no longer running made on a loopback server
//!   (their names carry the pid): a run creates a few hundred, ~8 MB each,
//!   and the disk of a CI machine is not unlimited.
//! * [`Cluster`]: a throwaway cluster of one's own (`initdb` + `pg_ctl` in a
//!   temporary directory, as the `postgres` user when running as root), for
//!   a test that restarts its server or a benchmark that wants PostgreSQL's
//!   default, durable settings. Stopped (immediately) when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use sqlx::Connection;

use crate::Error;

/// The variable naming the server.
pub const SERVER_URL_VARIABLE: &str = "NUDGE_TEST_DATABASE_URL";

/// The server URL; a clear failure when the variable is missing.
pub fn server_url() -> String {
    std::env::var(SERVER_URL_VARIABLE).unwrap_or_else(|_| {
        panic!(
            "{SERVER_URL_VARIABLE} is not set: run `scripts/test` (it installs PostgreSQL and starts a throwaway server) or point it at a PostgreSQL server you may create databases on"
        )
    })
}

/// Creates a new, empty database on the server; returns its URL.
pub async fn fresh_database() -> String {
    let server = server_url();
    let name = format!(
        "nudge_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut admin = sqlx::PgConnection::connect(&server)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {SERVER_URL_VARIABLE}: {error}"));
    if !SWEPT.swap(true, std::sync::atomic::Ordering::Relaxed) && is_loopback(&server) {
        drop_leftovers(&mut admin).await;
    }
    // `name` is made here from numbers, not input.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|error| panic!("cannot create database {name}: {error}"));
    admin.close().await.ok();
    with_database(&server, &name)
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Drops `nudge_test_<pid>_<n>` databases whose process is gone. Only on a
/// loopback server, where the pid means a process of this machine; a
/// failure only leaves them, as before.
async fn drop_leftovers(admin: &mut sqlx::PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'nudge\\_test\\_%'")
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    for name in names {
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        let Some(pid) = name
            .strip_prefix("nudge_test_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        // `name` is letters, digits and underscores (checked above).
        let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        let _ = sqlx::query(sqlx::AssertSqlSafe(drop))
            .execute(&mut *admin)
            .await;
    }
}

/// Whether `url` names a server on this machine.
fn is_loopback(url: &str) -> bool {
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .any(|loopback| host == *loopback || host.starts_with(&format!("{loopback}:")))
}

/// `url` with its database path replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|i| start + i))
        .unwrap_or(base.len());
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// The newest installed server binaries: `NUDGE_TEST_PG_BIN`, else Debian's
/// `/usr/lib/postgresql/<version>/bin`.
pub fn server_bin_dir() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("NUDGE_TEST_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| no_server())?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(no_server)
}

fn no_server() -> Error {
    Error::new(
        "PostgreSQL's server is not installed: run `scripts/test` once (it installs Debian's postgresql) or set NUDGE_TEST_PG_BIN",
    )
}

/// A PostgreSQL server of one's own on a free loopback port.
pub struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    /// `runuser -u postgres --` when running as root (initdb refuses root).
    as_postgres: bool,
    /// The server's command-line settings, for every start.
    options: String,
}

impl Cluster {
    /// `initdb` and start, with `settings` (`name=value`) on the command
    /// line; PostgreSQL's defaults otherwise (fsync on).
    pub fn start(settings: &[&str]) -> Result<Cluster, Error> {
        let bin = server_bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("nudge-pg-")
            .tempdir()
            .map_err(|error| Error::new(format!("temporary directory: {error}")))?;
        let as_postgres = is_root();
        if as_postgres {
            run(Command::new("chown").arg("postgres:").arg(dir.path()))?;
        }
        let port = crate::ports::free_port();
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} -c max_connections=200",
            dir.path().display()
        );
        for setting in settings {
            options.push_str(" -c ");
            options.push_str(setting);
        }
        let cluster = Cluster {
            bin,
            port,
            dir,
            as_postgres,
            options,
        };
        cluster.run_tool(
            "initdb",
            &[
                "-D",
                &cluster.data().display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
        )?;
        cluster.restart()?;
        Ok(cluster)
    }

    /// `postgres://postgres@127.0.0.1:PORT/DATABASE`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates `name` and returns its URL.
    pub async fn create_database(&self, name: &str) -> Result<String, Error> {
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .map_err(|error| Error::new(format!("connect to the cluster: {error}")))?;
        // `name` comes from the caller's code, not from input.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .map_err(|error| Error::new(format!("create database {name}: {error}")))?;
        admin.close().await.ok();
        Ok(self.url(name))
    }

    /// Bytes the cluster's data directory holds.
    pub fn disk_bytes(&self) -> u64 {
        crate::bench::procstat::dir_bytes(&self.data())
    }

    /// The running server's (postmaster's) pid, from `postmaster.pid`; its
    /// backends are its children (for CPU figures).
    pub fn server_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// `pg_ctl stop -m immediate` (a crash, as far as clients can tell).
    pub fn stop_immediately(&self) -> Result<(), Error> {
        self.pg_ctl(&["-m", "immediate", "stop"])
    }

    /// Starts the server (again, after [`Self::stop_immediately`]).
    pub fn restart(&self) -> Result<(), Error> {
        self.pg_ctl(&["-o", &self.options, "-w", "start"])
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), Error> {
        let data = self.data().display().to_string();
        let log = self.dir.path().join("log").display().to_string();
        let mut all = vec!["-D", data.as_str(), "-l", log.as_str()];
        all.extend_from_slice(args);
        self.run_tool("pg_ctl", &all)
    }

    fn run_tool(&self, tool: &str, args: &[&str]) -> Result<(), Error> {
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        command.args(args);
        run(&mut command)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop_immediately();
    }
}

fn run(command: &mut Command) -> Result<(), Error> {
    let output = command
        .output()
        .map_err(|error| Error::new(format!("{command:?}: {error}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

fn is_root() -> bool {
    // The owner of /proc/self is the process's user.
    std::fs::metadata("/proc/self")
        .map(|meta| std::os::unix::fs::MetadataExt::uid(&meta) == 0)
        .unwrap_or(false)
}

/// Whether `path` is an existing file (for callers checking a bin dir).
pub fn has_tool(bin: &Path, tool: &str) -> bool {
    bin.join(tool).exists()
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_only_the_database() {
        assert_eq!(
            with_database("postgres://u@127.0.0.1:5/postgres", "t1"),
            "postgres://u@127.0.0.1:5/t1"
        );
        assert_eq!(
            with_database("postgres://u@h/postgres?sslmode=disable", "t2"),
            "postgres://u@h/t2?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "t3"), "postgres://h/t3");
    }
}
