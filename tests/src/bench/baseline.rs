//! The baseline the agent's intake is compared with: an HTTP server that
//! does nothing but read the body and answer 200 `{"success":true}`.
//! Promises: it runs on its own runtime and threads, of the same kind as the
//! agent's, so the load generator costs it what it costs the agent.

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};

use bytes::Bytes;
use hyper::header::CONTENT_TYPE;

use super::Result;

/// An HTTP server on its own runtime (same kind as the agent's:
/// `Runtime::new()`, one worker per core) that reads the body and answers
/// 200 `{"success":true}`.
pub fn start_baseline() -> Result<(
    SocketAddr,
    std::thread::JoinHandle<()>,
    tokio::sync::oneshot::Sender<()>,
)> {
    let listener = StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("baseline".into())
        .spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("baseline runtime");
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("baseline listener");
                let app = axum::Router::new().fallback(|body: Bytes| async move {
                    let _ = body.len();
                    ([(CONTENT_TYPE, "application/json")], r#"{"success":true}"#)
                });
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        })?;
    Ok((addr, thread, stop_tx))
}
