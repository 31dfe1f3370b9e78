//! The agent's side: a rustls [`ClientConfig`] that verifies the control
//! plane against a CA bundle (reloaded from its file) or, without one,
//! against the webpki roots (Mozilla's CAs, built in), and that presents a
//! client certificate (reloaded likewise) when one is configured.
//!
//! No session resumption: every new connection verifies the server against
//! the current bundle (agents reconnect rarely; nothing is lost).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::reload::{Reloading, Watched};
use crate::{PemFile, TlsError};

/// The client's files: the CA bundle that the server's certificate must
/// chain to (`None`: the webpki roots), and its own certificate and key
/// (`None`: no client certificate).
#[derive(Debug, Clone)]
pub struct ClientFiles {
    pub ca: Option<PemFile>,
    pub identity: Option<(PemFile, PemFile)>,
}

/// A client configuration that follows its files (once
/// [`crate::reload::watch`] runs over [`ClientTls::watched`]).
pub struct ClientTls {
    config: Arc<ClientConfig>,
    watched: Vec<Arc<dyn Watched>>,
}

impl ClientTls {
    /// Loads every file; an error names the setting of the file at fault.
    pub fn load(files: &ClientFiles) -> Result<Self, TlsError> {
        let mut watched: Vec<Arc<dyn Watched>> = Vec::new();
        let builder = ClientConfig::builder_with_provider(crate::provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Config(error.to_string()))?;
        let builder = match &files.ca {
            Some(ca) => {
                let verifier = Arc::new(server_verifier(ca)?);
                watched.push(verifier.clone());
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(CurrentServerVerifier(verifier)))
            }
            None => builder.with_root_certificates(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            }),
        };
        let mut config = match &files.identity {
            Some((cert, key)) => {
                let certificate = Arc::new(crate::server::certified_key(
                    "client certificate",
                    cert,
                    key,
                )?);
                watched.push(certificate.clone());
                builder.with_client_cert_resolver(Arc::new(CurrentClientCertificate(certificate)))
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![crate::ALPN_H2.to_vec()];
        config.resumption = Resumption::disabled();
        Ok(ClientTls {
            config: Arc::new(config),
            watched,
        })
    }

    pub fn config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.config)
    }

    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config())
    }

    /// What [`crate::reload::watch`] must keep current.
    pub fn watched(&self) -> Vec<Arc<dyn Watched>> {
        self.watched.clone()
    }
}

fn server_verifier(ca: &PemFile) -> Result<Reloading<Arc<WebPkiServerVerifier>>, TlsError> {
    let file = ca.clone();
    Reloading::load("server CA bundle", vec![ca.clone()], move |pem| {
        let roots = crate::pem::roots(&file, &pem[0])?;
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crate::provider())
            .build()
            .map_err(|error| TlsError::invalid(&file, error.to_string()))
    })
}

/// Verifies the server against the current CA bundle.
#[derive(Debug)]
pub struct CurrentServerVerifier(Arc<Reloading<Arc<WebPkiServerVerifier>>>);

impl ServerCertVerifier for CurrentServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.current().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().supported_verify_schemes()
    }
}

/// Presents the current client certificate.
#[derive(Debug)]
pub struct CurrentClientCertificate(Arc<Reloading<CertifiedKey>>);

impl ResolvesClientCert for CurrentClientCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
