//! The per-user device limit (`NUDGE_CP_MAX_DEVICES_PER_USER`), black box:
//! the real control plane (`nudge_control_plane::run`) on 127.0.0.1:0 with
//! the setting on its command line, driven over HTTP like an operator's
//! backend would. One registration more than the limit succeeds and
//! deletes the user's least reachable device on that platform (a
//! deactivated one first, else the one seen least recently); a refresh
//! evicts nothing; other platforms and other users are not touched.

use std::time::Duration;

use nudge_control_plane::{Config, Listeners};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "device-limit-admin-token";

struct Running {
    base: String,
    client: reqwest::Client,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), nudge_control_plane::Error>>,
    _data: tempfile::TempDir,
}

impl Running {
    async fn start(limit: usize) -> Running {
        let data = tempfile::tempdir().unwrap();
        let args = [
            "nudge-control-plane".to_owned(),
            format!("--data-dir={}", data.path().display()),
            "--grpc-listen=127.0.0.1:0".to_owned(),
            "--http-listen=127.0.0.1:0".to_owned(),
            "--admin-listen=127.0.0.1:0".to_owned(),
            format!("--admin-token={TOKEN}"),
            format!("--max-devices-per-user={limit}"),
        ];
        let config = <Config as clap::Parser>::try_parse_from(args).unwrap();
        let listeners = Listeners::bind(&config).await.unwrap();
        let base = format!("http://{}", listeners.http.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(nudge_control_plane::run(
            config,
            listeners,
            shutdown.clone(),
        ));
        Running {
            base,
            client: reqwest::Client::new(),
            shutdown,
            task,
            _data: data,
        }
    }

    /// Registers `device` for `user`; the status and the record.
    async fn register(&self, user: &str, device: Value) -> (StatusCode, Value) {
        let reply = self
            .client
            .post(format!("{}/v1/admin/users/{user}/devices", self.base))
            .bearer_auth(TOKEN)
            .json(&device)
            .send()
            .await
            .unwrap();
        let status = reply.status();
        (status, reply.json().await.unwrap())
    }

    async fn deactivate(&self, user: &str, id: &str) {
        let reply = self
            .client
            .patch(format!("{}/v1/admin/users/{user}/devices/{id}", self.base))
            .bearer_auth(TOKEN)
            .json(&json!({"active": false, "reason": "lost phone"}))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), StatusCode::OK);
    }

    /// The user's addresses on `platform` (token or endpoint), sorted.
    async fn addresses(&self, user: &str, platform: &str) -> Vec<String> {
        let reply = self
            .client
            .get(format!("{}/v1/admin/users/{user}/devices", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), StatusCode::OK);
        let body: Value = reply.json().await.unwrap();
        let mut found: Vec<String> = body["devices"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|device| device["platform"] == platform)
            .map(|device| {
                device["token"]
                    .as_str()
                    .or(device["subscription"]["endpoint"].as_str())
                    .unwrap()
                    .to_owned()
            })
            .collect();
        found.sort();
        found
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

fn fcm(token: &str) -> Value {
    json!({"platform": "fcm", "token": token})
}

fn web_push(endpoint: &str) -> Value {
    json!({
        "platform": "web_push",
        "subscription": {"endpoint": endpoint, "keys": {
            "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM",
            "auth": "tBHItJI5svbpez7KI4CCXg",
        }},
    })
}

/// Lets the clock move on, so `last_seen_at` (milliseconds) orders the
/// registrations.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_beyond_the_limit_evicts_the_least_reachable_device() {
    let server = Running::start(3).await;
    let mut ids = std::collections::HashMap::new();
    for token in ["t1", "t2", "t3"] {
        let (status, device) = server.register("u1", fcm(token)).await;
        assert_eq!(status, StatusCode::CREATED, "{device}");
        ids.insert(token, device["id"].as_str().unwrap().to_owned());
        tick().await;
    }
    server.deactivate("u1", &ids["t2"]).await;
    for n in 0..3 {
        let (status, _) = server
            .register("u1", web_push(&format!("https://push.example/{n}")))
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    server.register("u2", fcm("other")).await;
    tick().await;

    // One over the limit: accepted, and the deactivated t2 goes although
    // t1 is older.
    let (status, _) = server.register("u1", fcm("t4")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(server.addresses("u1", "fcm").await, ["t1", "t3", "t4"]);
    tick().await;

    // A refresh is not a new device: nothing is evicted.
    let (status, _) = server.register("u1", fcm("t1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.addresses("u1", "fcm").await, ["t1", "t3", "t4"]);
    tick().await;

    // Then the least recently seen goes: t3 (t1 was just refreshed).
    let (status, _) = server.register("u1", fcm("t5")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(server.addresses("u1", "fcm").await, ["t1", "t4", "t5"]);

    // Other platforms and users keep what they had.
    assert_eq!(server.addresses("u1", "web_push").await.len(), 3);
    assert_eq!(server.addresses("u2", "fcm").await, ["other"]);
    server.stop().await;
}

#[tokio::test]
async fn a_limit_outside_its_range_is_refused_by_name() {
    for bad in ["0", "1001"] {
        let config = <Config as clap::Parser>::try_parse_from([
            "nudge-control-plane",
            "--max-devices-per-user",
            bad,
        ])
        .unwrap();
        let error = config.validate().unwrap_err();
        assert_eq!(error.setting, "NUDGE_CP_MAX_DEVICES_PER_USER", "{error}");
    }
}
