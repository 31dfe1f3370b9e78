//! TLS to the control plane (an `https://` NUDGE_AGENT_CONTROL_PLANE): our
//! own connector dials TCP and runs the rustls handshake with a
//! configuration whose CA bundle and client certificate follow their files
//! (`nudge_tls::client`); tonic gets the finished TLS stream.
//!
//! tonic's own TLS cannot change its material without a new channel, so
//! the endpoint handed to tonic is the `http://` form of the address and
//! the connector always speaks TLS: tonic never adds (or, should a feature
//! enable it elsewhere in the build, doubles) a TLS layer.
//!
//! Each replica's connection dials the address its host resolved to and
//! checks the certificate against the configured host name (or
//! NUDGE_AGENT_TLS_SERVER_NAME), never against the IP.
//!
//! Promises: every new connection uses the material current at that moment
//! (files checked every NUDGE_AGENT_TLS_RELOAD_INTERVAL); an established
//! HTTP/2 connection carries on with what it was verified with until it
//! breaks. A refused handshake is a retriable shipping failure: the events
//! stay in the outbox.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use nudge_tls::client::{ClientFiles, ClientTls};
use nudge_tls::reload::{Round, Watched};
use nudge_tls::rustls::pki_types::ServerName;
use nudge_tls::tokio_rustls::TlsConnector;
use nudge_tls::tokio_rustls::client::TlsStream;
use nudge_tls::{PemFile, TlsError};
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// The agent's TLS towards the control plane (every replica).
pub struct AgentTls {
    tls: ClientTls,
    reload_every: Duration,
}

impl AgentTls {
    /// Loads the files the settings name; `None` for an `http://` address.
    /// An error names the setting whose file is at fault.
    pub fn load(config: &Config) -> Result<Option<Self>, TlsError> {
        if !config.uses_tls() {
            return Ok(None);
        }
        let identity = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some((
                PemFile::new("NUDGE_AGENT_TLS_CERT", cert),
                PemFile::new("NUDGE_AGENT_TLS_KEY", key),
            )),
            _ => None,
        };
        let files = ClientFiles {
            ca: config
                .tls_ca
                .as_ref()
                .map(|ca| PemFile::new("NUDGE_AGENT_TLS_CA", ca)),
            identity,
        };
        Ok(Some(AgentTls {
            tls: ClientTls::load(&files)?,
            reload_every: config.tls_reload_interval,
        }))
    }

    /// The connector tonic dials `address` with, checking the
    /// certificate against `server_name` (the configured host, not the
    /// address it resolved to).
    pub(super) fn connector(
        &self,
        address: SocketAddr,
        server_name: ServerName<'static>,
    ) -> TlsDialer {
        TlsDialer {
            connector: self.tls.connector(),
            server_name,
            address,
        }
    }

    /// Keeps the material current until `stop`, counting reloads in
    /// `registry`.
    pub fn watch(
        &self,
        registry: &Registry,
        stop: CancellationToken,
    ) -> impl Future<Output = ()> + Send + use<> {
        let metrics = TlsMetrics::register(registry);
        let watched: Vec<Arc<dyn Watched>> = self.tls.watched();
        nudge_tls::reload::watch(
            watched,
            self.reload_every,
            move |round| metrics.record(round),
            stop,
        )
    }
}

/// Dials the control plane: TCP, then the TLS handshake.
#[derive(Clone)]
pub(super) struct TlsDialer {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    /// The replica's address; the URI tonic passes is ignored (it is the
    /// `http://` stand-in naming the configured host).
    address: SocketAddr,
}

impl TlsDialer {
    pub(super) async fn dial(self) -> io::Result<TokioIo<TlsStream<TcpStream>>> {
        let tcp = TcpStream::connect(self.address).await?;
        tcp.set_nodelay(true)?;
        // The shipper logs the error (e.g. "invalid peer certificate:
        // NotValidForName"); this adds the name that was checked. A refusal
        // of our own certificate arrives after the handshake, as a closed
        // connection: the control plane's log says why.
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .inspect_err(|error| {
                tracing::debug!(
                    control_plane = %self.address,
                    server_name = ?self.server_name,
                    %error,
                    "tls handshake with the control plane failed"
                );
            })?;
        Ok(TokioIo::new(tls))
    }
}

/// Reload metrics, next to the code they measure.
struct TlsMetrics {
    /// Changes of the TLS files by outcome: `reloaded`, `failed`.
    reloads: IntCounterVec,
    /// Materials whose files cannot be used right now.
    failing: IntGauge,
}

impl TlsMetrics {
    fn register(registry: &Registry) -> Self {
        let metrics = TlsMetrics {
            reloads: IntCounterVec::new(
                Opts::new(
                    "nudge_agent_tls_reloads_total",
                    "Changes of the TLS files (CA bundle, client certificate), by outcome (reloaded, failed: the previous material stays in use).",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
            failing: IntGauge::new(
                "nudge_agent_tls_reload_failing",
                "TLS materials whose files on disk cannot be used; the previous ones are in use.",
            )
            .expect("valid metric"),
        };
        for outcome in ["reloaded", "failed"] {
            metrics.reloads.with_label_values(&[outcome]);
        }
        let _ = registry.register(Box::new(metrics.reloads.clone()));
        let _ = registry.register(Box::new(metrics.failing.clone()));
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
