//! Shared by the control plane's integration tests: a fresh, empty
//! database of each storage engine per test, and the HTTP router served
//! on a loopback port ([`serve`]).
//!
//! PostgreSQL comes from `NUDGE_TEST_DATABASE_URL`, a server `scripts/test`
//! starts for the run; each test creates a database of its own there
//! (`nudge_e2e::postgres`), so tests never see each other's rows.

#![allow(dead_code)]

pub mod contract;

use std::path::Path;

use nudge_control_plane::http::{HttpState, router};
use nudge_control_plane::storage::{
    DatabaseLocation, DatabaseSettings, SQLITE_FILE, StorageMetrics, Stores,
};

/// The two engines, for tests that run once on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The settings of a fresh database of `backend` (SQLite in `dir`).
pub async fn fresh_settings(backend: Backend, dir: &Path) -> DatabaseSettings {
    match backend {
        Backend::Sqlite => DatabaseSettings::sqlite(dir.join(SQLITE_FILE)),
        Backend::Postgres => DatabaseSettings {
            location: nudge_e2e::postgres::fresh_database()
                .await
                .parse::<DatabaseLocation>()
                .expect("a postgres URL"),
            pool_size: 8,
            connect_timeout: std::time::Duration::from_secs(10),
        },
    }
}

/// The settings of the PostgreSQL database `url`, or of SQLite in `dir`.
pub fn fresh_settings_at(url: Option<&str>, dir: &Path) -> DatabaseSettings {
    match url {
        None => DatabaseSettings::sqlite(dir.join(SQLITE_FILE)),
        Some(url) => DatabaseSettings {
            location: url.parse::<DatabaseLocation>().expect("a postgres URL"),
            pool_size: 4,
            connect_timeout: std::time::Duration::from_secs(10),
        },
    }
}

/// Every store on a fresh database of `backend`; sled (the records not yet
/// moved to SQL) in `dir`.
pub async fn fresh_stores(backend: Backend, dir: &Path) -> Stores {
    let settings = fresh_settings(backend, dir).await;
    Stores::open(&settings, dir, StorageMetrics::new())
        .await
        .expect("open the stores")
}

/// Each case (an `async fn(Backend)` of the test file) once per engine:
/// modules `sqlite` and `postgres` with one test each.
#[allow(unused_macros)]
macro_rules! on_both_engines {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// Serves `state`'s router on a free loopback port; returns the base URL
/// (`http://127.0.0.1:<port>`) and the server's task. Every response is
/// held to `openapi.json` on the way out ([`contract`]).
pub async fn serve(state: HttpState) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            router(state).layer(axum::middleware::from_fn(contract::check)),
        )
        .await
        .unwrap();
    });
    (base, task)
}
