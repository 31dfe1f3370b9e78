//! The real SMTP peer of the notification tests:
//! `control-plane/tests/peers/smtp_server.py` (aiosmtpd) on a loopback
//! port, and what it saved.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Child;

use nudge_e2e::peer::start_python_peer;
use tempfile::TempDir;

use super::{installed_tool, workspace_dir};

/// `smtp_server.py` on a loopback port, saving messages to a directory
/// (`<n>.eml`) and every RCPT address to `attempts.log`. Killed on drop;
/// its stdin stays open (it exits when stdin closes).
pub struct SmtpServer {
    child: Child,
}

impl SmtpServer {
    pub fn start(port: u16, dir: &TempDir) -> Self {
        let python = installed_tool("NUDGE_TEST_PYTHON", ".venv/bin/python", "aiosmtpd");
        let script = workspace_dir().join("control-plane/tests/peers/smtp_server.py");
        let port = port.to_string();
        let (child, line) = start_python_peer(
            &python,
            &script,
            [
                OsStr::new("--port"),
                OsStr::new(&port),
                OsStr::new("--dir"),
                dir.path().as_os_str(),
            ],
        )
        .expect("start smtp_server.py");
        assert_eq!(line, "ready", "smtp_server.py did not start");
        SmtpServer { child }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The messages the SMTP server saved in `dir`, in arrival order.
pub fn mails(dir: &TempDir) -> Vec<String> {
    let mut paths: Vec<(u64, PathBuf)> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let n = path
                .file_name()?
                .to_str()?
                .strip_suffix(".eml")?
                .parse()
                .ok()?;
            Some((n, path))
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|(_, path)| String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned())
        .collect()
}

/// Every address the SMTP server was given in a RCPT command, refused or
/// not: a mail begun and never finished is seen here too.
pub fn recipients(dir: &TempDir) -> Vec<String> {
    std::fs::read_to_string(dir.path().join("attempts.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}
