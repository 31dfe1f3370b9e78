//! PEM bytes to rustls material. Every function takes the bytes already
//! read (so that what is parsed is exactly what [`crate::reload`] compared)
//! and the file they came from (for the error).
//!
//! Accepted: `CERTIFICATE` blocks (a chain: the end-entity certificate
//! first, then intermediates, as cert-manager's `tls.crt` has them), and a
//! `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` (PKCS#1) or `EC PRIVATE KEY`
//! (SEC1) block; RSA (2048 bits or more), ECDSA P-256/P-384 and Ed25519.

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::{PemFile, TlsError};

/// Every `CERTIFICATE` block, in order; at least one.
pub fn certificates(file: &PemFile, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::invalid(file, format!("not valid PEM: {error}")))?;
    if certificates.is_empty() {
        return Err(TlsError::invalid(file, "no CERTIFICATE block"));
    }
    Ok(certificates)
}

/// The first private key block.
pub fn private_key(file: &PemFile, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|error| match error {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::invalid(
            file,
            "no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block",
        ),
        other => TlsError::invalid(file, format!("not valid PEM: {other}")),
    })
}

/// A certificate chain and its private key, checked to belong together (a
/// certificate renewed with a new key, read before the key file was
/// replaced, is refused rather than served with the old key).
pub fn certified_key(
    cert_file: &PemFile,
    cert_pem: &[u8],
    key_file: &PemFile,
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain = certificates(cert_file, cert_pem)?;
    let key = private_key(key_file, key_pem)?;
    CertifiedKey::from_der(chain, key, &crate::provider()).map_err(|error| match error {
        rustls::Error::InconsistentKeys(_) => TlsError::invalid(
            key_file,
            format!(
                "the key does not match the certificate in {} ({})",
                cert_file.path.display(),
                cert_file.setting
            ),
        ),
        other => TlsError::invalid(key_file, format!("unusable private key: {other}")),
    })
}

/// A CA bundle: every certificate in it becomes a trust anchor; one that
/// cannot is an error (a bundle silently missing a CA would refuse peers
/// for no visible reason).
pub fn roots(file: &PemFile, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for (index, certificate) in certificates(file, pem)?.into_iter().enumerate() {
        roots.add(certificate).map_err(|error| {
            TlsError::invalid(
                file,
                format!("certificate #{} is not usable as a CA: {error}", index + 1),
            )
        })?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::DevCa;

    fn file(setting: &'static str) -> PemFile {
        PemFile::new(setting, format!("/etc/nudge/{setting}.pem"))
    }

    #[test]
    fn a_certificate_and_its_key_load() {
        let ca = DevCa::new("test CA").unwrap();
        let issued = ca.server_cert(&["localhost".into()]).unwrap();
        let key = certified_key(
            &file("CERT"),
            issued.cert_pem.as_bytes(),
            &file("KEY"),
            issued.key_pem.as_bytes(),
        )
        .unwrap();
        assert_eq!(key.cert.len(), 1);
        assert_eq!(
            roots(&file("CA"), ca.cert_pem().as_bytes()).unwrap().len(),
            1
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let ca = DevCa::new("test CA").unwrap();
        let one = ca.server_cert(&["localhost".into()]).unwrap();
        let other = ca.server_cert(&["localhost".into()]).unwrap();
        let error = certified_key(
            &file("CERT"),
            one.cert_pem.as_bytes(),
            &file("KEY"),
            other.key_pem.as_bytes(),
        )
        .unwrap_err();
        assert_eq!(error.setting(), Some("KEY"));
        assert!(error.to_string().contains("does not match"), "{error}");
    }

    #[test]
    fn truncated_and_empty_files_are_refused_by_setting() {
        let ca = DevCa::new("test CA").unwrap();
        let pem = ca.cert_pem();
        let half = &pem.as_bytes()[..pem.len() / 2];
        let error = certificates(&file("CA"), half).unwrap_err();
        assert_eq!(error.setting(), Some("CA"));
        let error = roots(&file("CA"), b"").unwrap_err();
        assert!(
            error.to_string().contains("no CERTIFICATE block"),
            "{error}"
        );
        let error = private_key(&file("KEY"), pem.as_bytes()).unwrap_err();
        assert!(error.to_string().starts_with("KEY: "), "{error}");
    }
}
