//! The operations port (`NUDGE_CP_ADMIN_LISTEN`): `/metrics` in Prometheus
//! text format, `/healthz` (200 while the process runs: a liveness probe
//! must not fail just because a dependency is slow) and `/readyz` (200 once
//! the store is open and gRPC serves and while the database answers; 503
//! from the moment shutdown starts, so load balancers drain the instance
//! before it stops, and while the database does not answer, so traffic
//! goes to replicas that can serve it).
//!
//! This server stops last, after the other servers drained, so `/readyz`
//! keeps answering 503 during the drain.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::storage::Database;

/// Whether the instance should receive traffic.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// How long `/readyz` waits for the database's answer: probes time out
/// after a second by default.
const DATABASE_PROBE_TIMEOUT: Duration = Duration::from_millis(800);

#[derive(Clone)]
struct AdminState {
    metrics: Metrics,
    readiness: Readiness,
    database: Database,
}

/// The router of the admin listener.
pub fn router(metrics: Metrics, readiness: Readiness, database: Database) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(AdminState {
            metrics,
            readiness,
            database,
        })
}

/// Serves the admin port until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    readiness: Readiness,
    database: Database,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, readiness, database))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

async fn metrics_text(State(state): State<AdminState>) -> impl IntoResponse {
    match state.metrics.render() {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            text,
        ),
        Err(error) => {
            tracing::error!(%error, "could not render metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain")],
                error.to_string(),
            )
        }
    }
}

async fn ready(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if !state.readiness.is_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n");
    }
    match tokio::time::timeout(DATABASE_PROBE_TIMEOUT, state.database.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n"),
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: the database does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n")
        }
        Err(_) => {
            tracing::warn!("readiness: the database did not answer in time");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n")
        }
    }
}
