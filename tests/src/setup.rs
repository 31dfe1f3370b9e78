//! What every program instance of one run shares: the binaries, where data
//! directories go, the control plane's operator token and default settings.
//! The tests and the benchmark each build one (`tests/support`,
//! `bench::run`); [`crate::Agent`] and [`crate::ControlPlane`] are built from
//! it. Promises: each instance gets a fresh data directory under
//! [`Setup::data_parent`], removed with its handle unless
//! [`Setup::keep_data`] is set.

use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;

use crate::Error;

#[derive(Debug, Clone)]
pub struct Setup {
    pub agent_bin: PathBuf,
    pub control_plane_bin: PathBuf,
    /// Parent of the instances' data directories: fsync costs depend on the
    /// file system, so the benchmark lets the operator choose it.
    pub data_parent: PathBuf,
    /// Keep data directories and logs after the run and say where they are,
    /// for looking into a benchmark run afterwards.
    pub keep_data: bool,
    /// Starts the data directories' names (`nudge-e2e-` →
    /// `nudge-e2e-agent-…`), so leftovers say who made them.
    pub dir_prefix: String,
    /// The control plane's operator token (`NUDGE_CP_ADMIN_TOKEN`).
    pub admin_token: String,
    /// The token agents present on Ingest: every control plane accepts it
    /// (`NUDGE_CP_AGENT_TOKENS`) and every agent sends it
    /// (`NUDGE_AGENT_CONTROL_PLANE_TOKEN`), so every run ships over the
    /// authenticated path. At least 16 characters.
    pub agent_token: String,
    /// Settings every agent starts with, before its own.
    pub agent_defaults: Vec<(String, String)>,
    /// Settings every program gets (`NO_COLOR`, `RUST_LOG`).
    pub common_env: Vec<(String, String)>,
    /// How long a program may take to answer `/readyz` after a start: the
    /// tests share two cores with other builds and are generous.
    pub start_limit: Duration,
}

impl Setup {
    /// A fresh data directory named `<dir_prefix><role>-…`.
    pub fn data_dir(&self, role: &str) -> Result<TempDir, Error> {
        let mut dir = tempfile::Builder::new()
            .prefix(&format!("{}{role}-", self.dir_prefix))
            .tempdir_in(&self.data_parent)
            .map_err(|e| {
                Error::new(format!(
                    "create a data directory in {}: {e}",
                    self.data_parent.display()
                ))
            })?;
        if self.keep_data {
            dir.disable_cleanup(true);
            eprintln!("  (keeping {})", dir.path().display());
        }
        Ok(dir)
    }
}
