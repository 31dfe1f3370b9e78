//! A `nudge-agent` instance on its own ports and data directory. Promises:
//! ports and data are chosen at [`Agent::new`] and kept across restarts (a
//! SIGKILLed agent comes back with its outbox); its settings are the
//! [`Setup`]'s agent defaults (the setup's agent token among them)
//! overridden by the caller's.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::http::{self, Reply};
use crate::metrics::metric_value;
use crate::ports::free_loopback;
use crate::process::Process;
use crate::{Error, Setup};

pub struct Agent {
    pub process: Process,
    /// The Segment-compatible intake.
    pub intake: SocketAddr,
    /// `/metrics`, `/readyz`, `/healthz`.
    pub admin: SocketAddr,
    start_limit: Duration,
    client: reqwest::Client,
    // Declared last: removed after the process is gone.
    _dir: TempDir,
}

impl Agent {
    /// An agent shipping to `control_plane` (a `http://host:port` URL), with
    /// the setup's defaults overridden by `env`. Not started yet.
    pub fn new(setup: &Setup, control_plane: &str, env: &[(&str, &str)]) -> Result<Self, Error> {
        let dir = setup.data_dir("agent")?;
        let (intake, admin) = (free_loopback(), free_loopback());
        let settings = [
            ("NUDGE_AGENT_LISTEN", intake.to_string()),
            ("NUDGE_AGENT_ADMIN_LISTEN", admin.to_string()),
            (
                "NUDGE_AGENT_DATA_DIR",
                dir.path().join("data").display().to_string(),
            ),
            ("NUDGE_AGENT_CONTROL_PLANE", control_plane.to_owned()),
            ("NUDGE_AGENT_CONTROL_PLANE_TOKEN", setup.agent_token.clone()),
        ];
        let process = Process::new(
            "nudge-agent",
            setup.agent_bin.clone(),
            dir.path().join("agent.log"),
        )
        .with_env(setup.common_env.iter().cloned())
        .with_env(settings)
        .with_env(setup.agent_defaults.iter().cloned())
        .with_env(env.iter().copied())
        .with_readyz(admin);
        Ok(Agent {
            process,
            intake,
            admin,
            start_limit: setup.start_limit,
            client: http::client(),
            _dir: dir,
        })
    }

    /// [`Self::new`], then [`Self::start`].
    pub async fn started(
        setup: &Setup,
        control_plane: &str,
        env: &[(&str, &str)],
    ) -> Result<Self, Error> {
        let mut agent = Self::new(setup, control_plane, env)?;
        agent.start().await?;
        Ok(agent)
    }

    /// Starts (or restarts) it and waits for `/readyz`.
    pub async fn start(&mut self) -> Result<(), Error> {
        self.process.start(self.start_limit).await
    }

    /// `http://<intake>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.intake)
    }

    /// The text of `/metrics`.
    pub async fn metrics(&self) -> Result<String, Error> {
        let url = format!("http://{}/metrics", self.admin);
        http::get_text(&self.client, &url, None).await
    }

    /// The value of an unlabelled metric (gauges, counters); 0 when absent.
    pub async fn metric(&self, name: &str) -> Result<f64, Error> {
        Ok(metric_value(&self.metrics().await?, name, None).unwrap_or(0.0))
    }

    /// `POST` JSON to the intake.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Reply, Error> {
        http::post_json(&self.client, &self.url(path), body)
            .await
            .map_err(|e| Error::new(format!("POST {path}: {e}")))
    }
}
