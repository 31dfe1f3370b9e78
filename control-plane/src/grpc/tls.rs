//! TLS on the gRPC listener (`NUDGE_CP_TLS_*`): we accept TCP ourselves,
//! run the rustls handshake with a configuration whose certificate and
//! client-CA bundle follow their files (`nudge_tls::server`), and hand
//! tonic only finished TLS streams. tonic's own `ServerTlsConfig` cannot
//! change its certificate without a restart.
//!
//! Promises:
//!
//! * With TLS on, nothing is served in plain text on the gRPC port; with a
//!   client CA, nothing is served to a client without a certificate signed
//!   by it (the management API included: it shares the port).
//! * Handshakes run concurrently, each bounded by [`HANDSHAKE_TIMEOUT`], so
//!   a client that stalls mid-handshake holds up no one else.
//! * The files are checked every `NUDGE_CP_TLS_RELOAD_INTERVAL`; new
//!   connections use what they hold now, established ones carry on. A file
//!   that cannot be used is logged and counted, and the previous material
//!   stays in use (see `nudge_tls::reload`).

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::Stream;
use nudge_tls::reload::Round;
use nudge_tls::server::{ServerFiles, ServerTls};
use nudge_tls::tokio_rustls::TlsAcceptor;
use nudge_tls::tokio_rustls::server::TlsStream;
use nudge_tls::{PemFile, TlsError};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::warn_throttle::{WARN_INTERVAL, WarnThrottle};
use crate::config::TlsSettings;

/// Longest a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepted connections waiting for tonic to pick them up.
const ACCEPTED_BACKLOG: usize = 64;

/// The gRPC listener's TLS: the reloading rustls configuration and how
/// often to look at its files.
pub struct GrpcTls {
    tls: ServerTls,
    reload_every: Duration,
}

impl GrpcTls {
    /// Loads the files named by the settings; `None` when TLS is off. An
    /// error names the setting whose file is at fault.
    pub fn load(settings: &TlsSettings) -> Result<Option<Self>, TlsError> {
        let (Some(cert), Some(key)) = (&settings.tls_cert, &settings.tls_key) else {
            return Ok(None);
        };
        let files = ServerFiles {
            cert: PemFile::new("NUDGE_CP_TLS_CERT", cert),
            key: PemFile::new("NUDGE_CP_TLS_KEY", key),
            client_ca: settings
                .tls_client_ca
                .as_ref()
                .map(|ca| PemFile::new("NUDGE_CP_TLS_CLIENT_CA", ca)),
        };
        Ok(Some(GrpcTls {
            tls: ServerTls::load(&files)?,
            reload_every: settings.tls_reload_interval,
        }))
    }

    /// Whether agents must present a client certificate.
    pub fn mutual(&self) -> bool {
        self.tls.requires_client_certificates()
    }

    /// The TLS connections accepted on `listener`, until `shutdown`; also
    /// keeps the material current until then.
    pub(super) fn incoming(
        self,
        listener: TcpListener,
        registry: &Registry,
        shutdown: CancellationToken,
    ) -> impl Stream<Item = Result<TlsStream<TcpStream>, io::Error>> + use<> {
        let metrics = TlsMetrics::register(registry);
        tokio::spawn(nudge_tls::reload::watch(
            self.tls.watched(),
            self.reload_every,
            {
                let metrics = metrics.clone();
                move |round| metrics.record(round)
            },
            shutdown.clone(),
        ));
        let (accepted, mut receiver) = mpsc::channel(ACCEPTED_BACKLOG);
        tokio::spawn(accept(
            listener,
            self.tls.acceptor(),
            accepted,
            metrics,
            shutdown,
        ));
        futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
    }
}

/// Accepts TCP connections until `shutdown` (or until tonic stops taking
/// them) and starts a handshake for each.
async fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    accepted: mpsc::Sender<Result<TlsStream<TcpStream>, io::Error>>,
    metrics: TlsMetrics,
    shutdown: CancellationToken,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            () = accepted.closed() => return,
            result = listener.accept() => match result {
                Ok(connection) => connection,
                Err(error) => {
                    // Out of file descriptors and the like: back off a
                    // little instead of spinning.
                    tracing::warn!(%error, "grpc listener cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, accepted, metrics) = (acceptor.clone(), accepted.clone(), metrics.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    // Fails only when the server is gone; the connection
                    // is dropped with it.
                    let _ = accepted.send(Ok(stream)).await;
                }
                Ok(Err(error)) => handshake_failed(&metrics, peer, &error.to_string(), &error),
                Err(_) => {
                    let error = io::Error::from(io::ErrorKind::TimedOut);
                    handshake_failed(&metrics, peer, "handshake timed out", &error);
                }
            }
        });
    }
}

fn handshake_failed(metrics: &TlsMetrics, peer: SocketAddr, reason: &str, error: &io::Error) {
    metrics.handshake_failures.inc();
    // A TCP probe (a load balancer's, a port scan) connects and closes
    // without a word: not worth a warning.
    // Anyone who reaches the port can fail one at will: one warning a
    // minute, with how many were left out (the metric counts them all).
    static FAILED: WarnThrottle = WarnThrottle::new(WARN_INTERVAL);
    if error.kind() == io::ErrorKind::UnexpectedEof {
        tracing::debug!(%peer, reason, "grpc tls handshake failed");
    } else if let Some(left_out) = FAILED.admit(Instant::now()) {
        tracing::warn!(%peer, reason, failures_not_logged = left_out, "grpc tls handshake failed");
    }
}

/// The TLS metrics, next to the code they measure.
#[derive(Clone)]
struct TlsMetrics {
    /// Reloads by outcome: `reloaded`, `failed`.
    reloads: IntCounterVec,
    /// Materials whose files cannot be used right now (the previous
    /// material is in use): alert when above zero for long.
    failing: IntGauge,
    /// Refused or broken handshakes: agents without an acceptable
    /// certificate show up here.
    handshake_failures: IntCounter,
}

impl TlsMetrics {
    fn register(registry: &Registry) -> Self {
        let metrics = TlsMetrics {
            reloads: IntCounterVec::new(
                Opts::new(
                    "nudge_cp_tls_reloads_total",
                    "Changes of the gRPC listener's TLS files, by outcome (reloaded, failed: the previous material stays in use).",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
            failing: IntGauge::new(
                "nudge_cp_tls_reload_failing",
                "TLS materials (certificate, client CA bundle) whose files on disk cannot be used; the previous ones are in use.",
            )
            .expect("valid metric"),
            handshake_failures: IntCounter::new(
                "nudge_cp_tls_handshake_failures_total",
                "TLS handshakes on the gRPC listener that failed or were refused (e.g. no or an untrusted client certificate).",
            )
            .expect("valid metric"),
        };
        for outcome in ["reloaded", "failed"] {
            metrics.reloads.with_label_values(&[outcome]);
        }
        // Registered once per process; a second registration (a test
        // running two servers on one registry) keeps the first.
        let _ = registry.register(Box::new(metrics.reloads.clone()));
        let _ = registry.register(Box::new(metrics.failing.clone()));
        let _ = registry.register(Box::new(metrics.handshake_failures.clone()));
        metrics
    }

    fn record(&self, round: Round) {
        self.reloads
            .with_label_values(&["reloaded"])
            .inc_by(round.reloaded as u64);
        self.reloads
            .with_label_values(&["failed"])
            .inc_by(round.failed as u64);
        self.failing.set(round.failing as i64);
    }
}
