//! nudge-agent: the sidecar that applications call on localhost.
//!
//! # Layout
//!
//! * [`config`] — settings (flags, `NUDGE_AGENT_…` environment, defaults).
//! * [`segment`] — the Segment tracking spec and Nudge's own calls: parsing
//!   and validating a request body into envelopes (domain, no HTTP types).
//! * [`http`] — the intake listener (axum): bodies, auth, status codes.
//! * [`outbox`] — the durable sled outbox: ack only after fsync, delete only
//!   after the control plane's ack, byte quota, segment rotation.
//! * [`shipper`] — batches from the outbox to the control plane with
//!   backoff; [`grpc`] is its tonic transport.
//! * [`admin`] — `/metrics`, `/healthz`, `/readyz`; [`metrics`] defines them.
//!
//! [`run`] ties them together and owns shutdown: on cancellation, intake
//! stops, the shipper keeps going for the grace period, and whatever is left
//! stays on disk for the next start.

pub mod admin;
pub mod config;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod outbox;
pub mod segment;
pub mod shipper;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use config::Config;
use metrics::Metrics;
use outbox::{Outbox, OutboxError};

/// The agent's listeners, bound before [`run`] so that tests can bind port 0
/// and a bind failure is reported before anything else starts.
pub struct Listeners {
    pub intake: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &Config) -> Result<Self, Error> {
        let bind = |setting: &'static str, addr| async move {
            TcpListener::bind(addr).await.map_err(|source| Error::Bind {
                setting,
                addr,
                source,
            })
        };
        Ok(Self {
            intake: bind("NUDGE_AGENT_LISTEN", config.listen).await?,
            admin: bind("NUDGE_AGENT_ADMIN_LISTEN", config.admin_listen).await?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{setting}: cannot listen on {addr}: {source}")]
    Bind {
        setting: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the outbox: {0}")]
    Outbox(#[from] OutboxError),
    /// A TLS file cannot be used (names the setting).
    #[error(transparent)]
    Tls(#[from] nudge_tls::TlsError),
    /// The agent token cannot be used (names the setting).
    #[error(transparent)]
    Token(#[from] grpc::token::TokenError),
    #[error("{0} server failed: {1}")]
    Serve(&'static str, std::io::Error),
}

/// How long start-up waits for the first resolution of the control plane's
/// host names; the resolver keeps trying in the background.
const INITIAL_RESOLVE: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs the agent until `shutdown` is cancelled, then drains (see the crate
/// doc). Returns once everything is flushed and closed.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let metrics = Metrics::new();
    let tls = grpc::tls::AgentTls::load(&config)?.map(Arc::new);
    let token = config.control_plane_token()?.map(Arc::new);
    if config.token_in_plain_text() {
        tracing::warn!(
            "the control plane token is sent in plain text (NUDGE_AGENT_CONTROL_PLANE is http:// to another host): anyone on the path can read it; use https:// (NUDGE_AGENT_TLS_*) or a network that encrypts (a service mesh)"
        );
    }
    let outbox_config = config.outbox();
    let outbox = {
        let metrics = metrics.clone();
        tokio::task::spawn_blocking(move || Outbox::open(outbox_config, metrics))
            .await
            .expect("opening the outbox does not panic")?
    };
    // Replicas failing are skipped on the shipper's own retry schedule.
    let replicas =
        shipper::replicas::Replicas::new(config.retry_initial, config.retry_max, &metrics.registry);
    let mut resolver = grpc::resolve::Resolver::new(&config, tls.clone(), token, replicas.clone());
    // One pass before shipping starts, so the first push has somewhere to
    // go; bounded, because the agent must start while DNS is down.
    let _ = tokio::time::timeout(INITIAL_RESOLVE, resolver.refresh()).await;
    let tasks = TaskTracker::new();
    let ready = Arc::new(AtomicBool::new(true));

    // Stopped last, after intake: appends in flight still need their flush.
    let flusher_stop = CancellationToken::new();
    let flusher = tokio::spawn(outbox::run_flusher(outbox.clone(), flusher_stop.clone()));

    // The shipper drains once `shutdown` fires and is stopped hard when the
    // grace period ends.
    let shipper_stop = CancellationToken::new();
    let shipper = tokio::spawn(shipper::run_shipper(
        outbox.clone(),
        replicas,
        config.shipper(),
        metrics.clone(),
        shutdown.clone(),
        shipper_stop.clone(),
    ));

    let admin_stop = CancellationToken::new();
    // Certificates follow their files while anything may still connect.
    if let Some(tls) = &tls {
        tasks.spawn(tls.watch(&metrics.registry, admin_stop.clone()));
    }
    tasks.spawn(resolver.run(admin_stop.clone()));
    let admin_app = admin::admin_router(admin::AdminState {
        metrics: metrics.clone(),
        outbox: outbox.clone(),
        ready: Arc::clone(&ready),
    });
    let admin_server = tasks.spawn({
        let stop = admin_stop.clone();
        async move {
            axum::serve(listeners.admin, admin_app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .map_err(|e| Error::Serve("admin", e))
        }
    });

    let server_keys = config.server_keys();
    if server_keys.is_empty() {
        tracing::info!(
            "no NUDGE_AGENT_SERVER_KEYS: calls without an Origin header may notify and set \
             contact traits; set server keys if anything untrusted can reach the intake"
        );
    }
    let intake_app = http::intake_router(
        http::IntakeState::new(
            outbox.clone(),
            metrics.clone(),
            config.accepted_write_keys(),
        )
        .with_server_keys(server_keys)
        .with_origins(config.allowed_origins()),
    );
    tracing::info!(
        intake = %listeners.intake.local_addr().map_err(|e| Error::Serve("intake", e))?,
        control_plane = %config
            .control_plane
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        pending = outbox.pending_events(),
        "nudge-agent started"
    );
    let intake = axum::serve(listeners.intake, intake_app)
        .with_graceful_shutdown({
            let shutdown = shutdown.clone();
            let outbox = outbox.clone();
            let ready = Arc::clone(&ready);
            async move {
                shutdown.cancelled().await;
                ready.store(false, Ordering::Release);
                outbox.stop_accepting();
                tracing::info!("shutting down: intake closed, shipping what remains");
            }
        })
        .await
        .map_err(|e| Error::Serve("intake", e));
    // Intake has finished every request it started. Make sure the shipper
    // drains even if intake ended on its own (an error).
    shutdown.cancel();

    let grace = config.shutdown_grace;
    let shipper_abort = shipper.abort_handle();
    if tokio::time::timeout(grace, shipper).await.is_err() {
        shipper_stop.cancel();
        shipper_abort.abort();
        tracing::warn!(
            left = outbox.pending_events(),
            "grace period over; the rest stays in the outbox for the next start"
        );
    }
    flusher_stop.cancel();
    let _ = flusher.await;
    if let Err(error) = outbox.flush() {
        tracing::error!(%error, "final outbox flush failed");
    }
    tracing::info!(left = outbox.pending_events(), "nudge-agent stopped");
    admin_stop.cancel();
    tasks.close();
    tasks.wait().await;
    intake?;
    match admin_server.await {
        Ok(result) => result,
        Err(join_error) => panic!("admin server panicked: {join_error}"),
    }
}
