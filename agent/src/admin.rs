//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process
//! is alive) and `/readyz` (intake accepts calls).
//!
//! Readiness deliberately ignores whether the control plane is reachable:
//! buffering while it is away is the agent's job, and an unready sidecar
//! would take the whole application pod out of its Service.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::outbox::Outbox;

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Metrics,
    pub outbox: Outbox,
    /// False once shutdown began.
    pub ready: Arc<AtomicBool>,
}

pub fn admin_router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(state)
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    state.outbox.refresh_disk_gauges();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn ready(State(state): State<AdminState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    }
}
