//! The Python peers under `control-plane/tests/peers/` (an SMTP server, a
//! Web Push receiver), started the one way they expect: stdin piped (a
//! peer exits when it closes), stdout piped for its first line, which
//! says it is ready (`ready`, or a JSON line with what it bound), and
//! stderr passed through to the test's output.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::Error;

/// Starts `python script args…` and returns it with its first line
/// (without the line break). The caller kills it; if it never says a
/// line, it is killed here.
pub fn start_python_peer<I, A>(
    python: &Path,
    script: &Path,
    args: I,
) -> Result<(Child, String), Error>
where
    I: IntoIterator<Item = A>,
    A: AsRef<OsStr>,
{
    let mut child = Command::new(python)
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Error::new(format!("start {}: {e}", script.display())))?;
    let mut line = String::new();
    let read = match child.stdout.take() {
        Some(stdout) => BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string()),
        None => Err("no stdout".to_owned()),
    };
    if let Err(error) = read {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Error::new(format!(
            "read {}'s first line: {error}",
            script.display()
        )));
    }
    Ok((child, line.trim_end().to_owned()))
}
