//! A `nudge-control-plane` instance on its own ports and data directory, and
//! its admin API. Promises: ports and data are chosen at [`ControlPlane::new`]
//! and kept across restarts, so an agent can be pointed at a control plane
//! that is not running yet or is down for a restart; listing a user's events
//! follows the `next` cursor to the end. Agents must present the setup's
//! agent token (`NUDGE_CP_AGENT_TOKENS`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::ports::free_loopback;
use crate::process::Process;
use crate::{Error, Setup, http};

pub struct ControlPlane {
    pub process: Process,
    pub grpc: SocketAddr,
    /// The admin API (`/v1/admin/...`).
    pub http: SocketAddr,
    /// `/metrics`, `/readyz`.
    pub admin: SocketAddr,
    token: String,
    agent_token: String,
    start_limit: Duration,
    client: reqwest::Client,
    // Declared last: removed after the process is gone.
    _dir: TempDir,
}

impl ControlPlane {
    /// Picks ports and a data directory; nothing runs until [`Self::start`].
    pub fn new(setup: &Setup) -> Result<Self, Error> {
        let dir = setup.data_dir("cp")?;
        let (grpc, http, admin) = (free_loopback(), free_loopback(), free_loopback());
        let settings = [
            ("NUDGE_CP_GRPC_LISTEN", grpc.to_string()),
            ("NUDGE_CP_HTTP_LISTEN", http.to_string()),
            ("NUDGE_CP_ADMIN_LISTEN", admin.to_string()),
            (
                "NUDGE_CP_DATA_DIR",
                dir.path().join("data").display().to_string(),
            ),
            ("NUDGE_CP_ADMIN_TOKEN", setup.admin_token.clone()),
            ("NUDGE_CP_AGENT_TOKENS", setup.agent_token.clone()),
        ];
        let process = Process::new(
            "nudge-control-plane",
            setup.control_plane_bin.clone(),
            dir.path().join("control-plane.log"),
        )
        .with_env(setup.common_env.iter().cloned())
        .with_env(settings)
        .with_readyz(admin);
        Ok(ControlPlane {
            process,
            grpc,
            http,
            admin,
            token: setup.admin_token.clone(),
            agent_token: setup.agent_token.clone(),
            start_limit: setup.start_limit,
            client: http::client(),
            _dir: dir,
        })
    }

    /// Where its data lives (`NUDGE_CP_DATA_DIR`).
    pub fn data_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("data")
    }

    /// Adds settings (e.g. `NUDGE_CP_CONFIG`) over the defaults; takes
    /// effect at the next [`Self::start`].
    pub fn with_env<'a>(mut self, env: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        self.process = self.process.with_env(env);
        self
    }

    /// [`Self::new`], then [`Self::start`].
    pub async fn started(setup: &Setup) -> Result<Self, Error> {
        let mut control_plane = Self::new(setup)?;
        control_plane.start().await?;
        Ok(control_plane)
    }

    /// Starts (or restarts) it and waits for `/readyz`.
    pub async fn start(&mut self) -> Result<(), Error> {
        self.process.start(self.start_limit).await
    }

    /// The agent token it accepts (`NUDGE_CP_AGENT_TOKENS`, unless a test
    /// replaced it), for clients that push to Ingest themselves.
    pub fn agent_token(&self) -> &str {
        &self.agent_token
    }

    /// What agents put in `NUDGE_AGENT_CONTROL_PLANE`.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The text of `/metrics`.
    pub async fn metrics(&self) -> Result<String, Error> {
        let url = format!("http://{}/metrics", self.admin);
        http::get_text(&self.client, &url, None).await
    }

    /// Total events stored (`GET /v1/admin/stats`).
    pub async fn stored_count(&self) -> Result<u64, Error> {
        let stats = self.admin_get("/v1/admin/stats").await?;
        stats["events"]
            .as_u64()
            .ok_or_else(|| Error::new(format!("stats without `events`: {stats}")))
    }

    /// Every stored event of `user`, following the `next` cursor.
    pub async fn events_for_user(&self, user: &str) -> Result<Vec<Value>, Error> {
        let mut events = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!("/v1/admin/events?user_id={user}&limit=1000");
            if let Some(cursor) = &after {
                path.push_str(&format!("&after={cursor}"));
            }
            let page = self.admin_get(&path).await?;
            let batch = page["events"]
                .as_array()
                .ok_or_else(|| Error::new(format!("no `events` in {page}")))?;
            events.extend(batch.iter().cloned());
            match &page["next"] {
                Value::Null => return Ok(events),
                Value::String(cursor) => after = Some(cursor.clone()),
                Value::Number(cursor) => after = Some(cursor.to_string()),
                other => return Err(Error::new(format!("unexpected `next`: {other}"))),
            }
            if batch.is_empty() {
                return Err(Error::new(format!(
                    "a page with no events but a next cursor: {page}"
                )));
            }
        }
    }

    /// How many times each id is stored, over the events of `users`.
    pub async fn stored_ids(&self, users: &[String]) -> Result<HashMap<String, usize>, Error> {
        let mut counts = HashMap::new();
        for user in users {
            for event in self.events_for_user(user).await? {
                let id = event["id"]
                    .as_str()
                    .ok_or_else(|| Error::new(format!("event without id: {event}")))?;
                *counts.entry(id.to_owned()).or_insert(0) += 1;
            }
        }
        Ok(counts)
    }

    /// `GET` an admin route (`/v1/admin/...`) that must answer 2xx, as JSON.
    pub async fn admin_get(&self, path: &str) -> Result<Value, Error> {
        self.admin_json(reqwest::Method::GET, path).await
    }

    /// `POST` an empty body to an admin route that must answer 2xx; the
    /// answer as JSON.
    pub async fn admin_post(&self, path: &str) -> Result<Value, Error> {
        self.admin_json(reqwest::Method::POST, path).await
    }

    /// `PUT`s a JSON body to an admin route; the status and the answer's
    /// text, whatever the status (tests check refusals too).
    pub async fn admin_put(&self, path: &str, body: &Value) -> Result<(u16, String), Error> {
        self.exchange(reqwest::Method::PUT, path, Some(body)).await
    }

    /// Sends `method` with an optional JSON body to an admin route; the
    /// status and the answer as JSON (`null` when empty or not JSON),
    /// whatever the status.
    pub async fn admin_send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), Error> {
        let (status, text) = self.exchange(method, path, body).await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// `method path` without a body, which must answer 2xx with JSON.
    async fn admin_json(&self, method: reqwest::Method, path: &str) -> Result<Value, Error> {
        let (status, text) = self.exchange(method.clone(), path, None).await?;
        if !(200..300).contains(&status) {
            return Err(Error::new(format!("{method} {path}: {status}: {text}")));
        }
        serde_json::from_str(&text)
            .map_err(|e| Error::new(format!("{method} {path}: not JSON ({e}): {text}")))
    }

    /// Sends one request with the admin token; see [`Self::send_as`].
    async fn exchange(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, String), Error> {
        self.send_as(Some(&self.token), method, path, body).await
    }

    /// Sends `method path` (with a JSON body, if any) to the HTTP API with
    /// `token` as its bearer token (a user's for `/v1/me/...`), or none
    /// (the public routes, or a refusal to see); the status and the
    /// answer's text, whatever the status. An answer that breaks
    /// `openapi.json` is an error, whatever the test wanted of it
    /// ([`crate::openapi_contract`]).
    pub async fn send_as(
        &self,
        token: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, String), Error> {
        let url = format!("http://{}{path}", self.http);
        let mut request = self.client.request(method.clone(), &url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let reply = request
            .send()
            .await
            .map_err(|e| Error::new(format!("{method} {url}: {e}")))?;
        let reply = crate::openapi_contract::read_checked(&method, reply)
            .await
            .map_err(Error::new)?;
        Ok((reply.status, reply.text()))
    }

    /// A user's notifications, newest first
    /// (`GET /v1/admin/users/{user}/notifications`).
    pub async fn notifications(&self, user: &str) -> Result<Vec<Value>, Error> {
        let page = self
            .admin_get(&format!("/v1/admin/users/{user}/notifications"))
            .await?;
        page["notifications"]
            .as_array()
            .cloned()
            .ok_or_else(|| Error::new(format!("no `notifications` in {page}")))
    }

    /// One notification's deliveries (`GET /v1/admin/notifications/{id}`).
    pub async fn deliveries(&self, notification: &str) -> Result<Vec<Value>, Error> {
        let page = self
            .admin_get(&format!("/v1/admin/notifications/{notification}"))
            .await?;
        page["deliveries"]
            .as_array()
            .cloned()
            .ok_or_else(|| Error::new(format!("no `deliveries` in {page}")))
    }

    /// The notification's delivery on `channel`.
    pub async fn delivery(&self, notification: &str, channel: &str) -> Result<Value, Error> {
        let deliveries = self.deliveries(notification).await?;
        deliveries
            .iter()
            .find(|d| d["channel"] == channel)
            .cloned()
            .ok_or_else(|| Error::new(format!("no {channel} delivery in {deliveries:#?}")))
    }
}
