//! TLS between the Nudge agent and the control plane: rustls
//! configurations (ring, TLS 1.2 and 1.3, ALPN `h2`) whose certificates,
//! keys and CA bundles come from PEM files and are re-read when the files
//! change, without a restart.
//!
//! # Layout
//!
//! * [`pem`] — PEM bytes to rustls material: certificate chains, private
//!   keys, CA bundles.
//! * [`reload`] — [`reload::Reloading`]: material loaded from files, kept
//!   current by [`reload::watch`], which polls the files' contents.
//! * [`server`] — the control plane's side: a certificate resolver and an
//!   optional client-certificate verifier (mTLS), both reloadable.
//! * [`client`] — the agent's side: a server-certificate verifier (a CA
//!   bundle or the webpki roots) and an optional client certificate, both
//!   reloadable.
//! * `dev` (feature `dev-certs`) — a development CA and certificates.
//!
//! # Promises
//!
//! * Material is swapped whole: a handshake sees the old certificate and key
//!   or the new ones, never a mix (a key that does not match its
//!   certificate is refused as a load error).
//! * A file that cannot be read or parsed (half written, missing during a
//!   swap, the wrong key) never replaces good material: the previous one
//!   stays in use, the failure is logged once per new file content, and the
//!   next change is tried again.
//! * New handshakes use the current material. Established connections are
//!   not torn down (HTTP/2 connections live long: an agent keeps its
//!   connection, verified with the material of its handshake, until it
//!   breaks). TLS session resumption is off on both sides, so every new
//!   connection is verified in full against the current CA bundles.

pub mod client;
pub mod pem;
pub mod reload;
pub mod server;

#[cfg(feature = "dev-certs")]
pub mod dev;

use std::path::PathBuf;
use std::sync::Arc;

pub use rustls;
pub use tokio_rustls;

/// The protocol both sides negotiate (gRPC runs over HTTP/2 only).
pub const ALPN_H2: &[u8] = b"h2";

/// The crypto provider every configuration here uses: ring (no aws-lc, no
/// C toolchain beyond ring's own).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// One PEM file and the setting (environment variable) that names it, so
/// that every error tells the operator which setting to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemFile {
    pub setting: &'static str,
    pub path: PathBuf,
}

impl PemFile {
    pub fn new(setting: &'static str, path: impl Into<PathBuf>) -> Self {
        PemFile {
            setting,
            path: path.into(),
        }
    }
}

/// Why TLS material could not be loaded; names the setting and the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("{setting}: cannot read {}: {problem}", path.display())]
    Read {
        setting: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error("{setting}: {}: {problem}", path.display())]
    Invalid {
        setting: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
}

impl TlsError {
    pub(crate) fn invalid(file: &PemFile, problem: impl Into<String>) -> Self {
        TlsError::Invalid {
            setting: file.setting,
            path: file.path.clone(),
            problem: problem.into(),
        }
    }

    /// The setting the error is about, if it is about one file.
    pub fn setting(&self) -> Option<&'static str> {
        match self {
            TlsError::Read { setting, .. } | TlsError::Invalid { setting, .. } => Some(setting),
            TlsError::Config(_) => None,
        }
    }
}

#[cfg(test)]
mod tests;
