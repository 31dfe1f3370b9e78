//! A webhook receiver for the end-to-end tests: an axum server on
//! 127.0.0.1 that checks each request's Standard Webhooks signature with
//! the control plane's own `verify_signature`, records it and answers 200.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use bytes::Bytes;
use serde_json::Value;

use nudge_control_plane::channels::webhook::verify_signature;

/// One request the webhook receiver got.
#[derive(Debug, Clone)]
pub struct Hook {
    pub webhook_id: String,
    pub signature_valid: bool,
    pub body: Value,
}

/// An axum server on 127.0.0.1 that checks each request's signature with
/// the control plane's `verify_signature` and records it; answers 200.
pub struct Receiver {
    pub url: String,
    hooks: Arc<Mutex<Vec<Hook>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Listening on a free loopback port; signatures are checked with
    /// `secret`.
    pub async fn start(secret: &'static str) -> Self {
        async fn hook(
            State((hooks, secret)): State<(Arc<Mutex<Vec<Hook>>>, &'static str)>,
            headers: HeaderMap,
            body: Bytes,
        ) -> &'static str {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let webhook_id = header("webhook-id");
            let signature_valid =
                header("webhook-timestamp")
                    .parse::<i64>()
                    .is_ok_and(|timestamp| {
                        verify_signature(
                            secret,
                            &webhook_id,
                            timestamp,
                            &body,
                            &header("webhook-signature"),
                        )
                    });
            let body = serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
            hooks.lock().unwrap().push(Hook {
                webhook_id,
                signature_valid,
                body,
            });
            "ok"
        }
        let hooks = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/hook", post(hook))
            .with_state((hooks.clone(), secret));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { url, hooks, task }
    }

    /// Every request so far, in arrival order.
    pub fn hooks(&self) -> Vec<Hook> {
        self.hooks.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
