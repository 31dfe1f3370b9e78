//! The control plane's side: a rustls [`ServerConfig`] whose certificate
//! and (with mTLS) client-CA bundle are reloaded from their files.
//!
//! * [`CurrentCertificate`] resolves every handshake to the certificate in
//!   use at that moment.
//! * [`CurrentClientVerifier`] delegates to a webpki client verifier built
//!   from the current CA bundle; a new bundle builds a new verifier. It
//!   sends no CA names in its certificate request (the names would have to
//!   outlive a reload); clients send their one certificate regardless.
//! * No session resumption: a resumed session would skip the client
//!   certificate check, so a CA removed from the bundle would go on
//!   admitting clients that resume.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

use crate::reload::{Reloading, Watched};
use crate::{PemFile, TlsError};

/// The server's files: certificate chain and key, and the CA bundle that
/// client certificates must chain to (`None`: no client certificates).
#[derive(Debug, Clone)]
pub struct ServerFiles {
    pub cert: PemFile,
    pub key: PemFile,
    pub client_ca: Option<PemFile>,
}

/// A server configuration that follows its files (once [`crate::reload::watch`]
/// runs over [`ServerTls::watched`]).
pub struct ServerTls {
    config: Arc<ServerConfig>,
    watched: Vec<Arc<dyn Watched>>,
    mutual: bool,
}

impl ServerTls {
    /// Loads every file; an error names the setting of the file at fault.
    pub fn load(files: &ServerFiles) -> Result<Self, TlsError> {
        let certificate = Arc::new(certified_key(
            "server certificate",
            &files.cert,
            &files.key,
        )?);
        let mut watched: Vec<Arc<dyn Watched>> = vec![certificate.clone()];
        let builder = ServerConfig::builder_with_provider(crate::provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Config(error.to_string()))?;
        let builder = match &files.client_ca {
            Some(ca) => {
                let verifier = Arc::new(client_verifier(ca)?);
                watched.push(verifier.clone());
                builder.with_client_cert_verifier(Arc::new(CurrentClientVerifier(verifier)))
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(CurrentCertificate(certificate)));
        config.alpn_protocols = vec![crate::ALPN_H2.to_vec()];
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(ServerTls {
            config: Arc::new(config),
            watched,
            mutual: files.client_ca.is_some(),
        })
    }

    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config())
    }

    /// What [`crate::reload::watch`] must keep current.
    pub fn watched(&self) -> Vec<Arc<dyn Watched>> {
        self.watched.clone()
    }

    /// Whether clients must present a certificate (mTLS).
    pub fn requires_client_certificates(&self) -> bool {
        self.mutual
    }
}

/// A certificate chain and key that follow their two files.
pub(crate) fn certified_key(
    what: &'static str,
    cert: &PemFile,
    key: &PemFile,
) -> Result<Reloading<CertifiedKey>, TlsError> {
    let (cert, key) = (cert.clone(), key.clone());
    Reloading::load(what, vec![cert.clone(), key.clone()], move |pem| {
        crate::pem::certified_key(&cert, &pem[0], &key, &pem[1])
    })
}

fn client_verifier(ca: &PemFile) -> Result<Reloading<Arc<dyn ClientCertVerifier>>, TlsError> {
    let file = ca.clone();
    Reloading::load("client CA bundle", vec![ca.clone()], move |pem| {
        let roots = crate::pem::roots(&file, &pem[0])?;
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crate::provider())
            .build()
            .map_err(|error| TlsError::invalid(&file, error.to_string()))
    })
}

/// Resolves every handshake to the current certificate.
#[derive(Debug)]
pub struct CurrentCertificate(Arc<Reloading<CertifiedKey>>);

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

/// Verifies client certificates against the current CA bundle.
#[derive(Debug)]
pub struct CurrentClientVerifier(Arc<Reloading<Arc<dyn ClientCertVerifier>>>);

impl ClientCertVerifier for CurrentClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .current()
            .verify_client_cert(end_entity, intermediates, now)
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
