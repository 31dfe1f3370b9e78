//! A development CA and certificates (rcgen, ECDSA P-256), for trying mTLS
//! locally and for the tests; production certificates come from your PKI
//! (e.g. cert-manager).
//!
//! [`write_dev_certs`] is what `nudge-control-plane dev-certs` runs: a new
//! CA, a server certificate for the control plane and a client certificate
//! for agents, as PEM files. Keys are written owner-only (0600). The CA's
//! key is not written: run the command again for new certificates (a new
//! CA).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// How long the CA and the issued certificates are valid, from yesterday
/// (clocks of the machines involved may lag a little).
const CA_DAYS: i64 = 10 * 365;
const LEAF_DAYS: i64 = 365;

/// Why certificates could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    #[error("cannot make the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} exists; remove it or choose another directory", .0.display())]
    Exists(PathBuf),
}

/// A certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A CA that lives in memory and issues certificates.
#[derive(Debug)]
pub struct DevCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl DevCa {
    /// A new CA named `name` (its common name).
    pub fn new(name: &str) -> Result<Self, DevCertError> {
        let mut params = CertificateParams::default();
        params.distinguished_name.remove(DnType::CommonName);
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Nudge development");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, CA_DAYS);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(DevCa { issuer })
    }

    /// The CA certificate (what peers trust).
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses; the
    /// first is also the common name).
    pub fn server_cert(&self, names: &[String]) -> Result<Issued, DevCertError> {
        let mut params = CertificateParams::new(names.to_vec())?;
        let common_name = names.first().map_or("nudge-control-plane", String::as_str);
        self.issue(
            &mut params,
            common_name,
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate whose common name (and DNS name) is `name`.
    pub fn client_cert(&self, name: &str) -> Result<Issued, DevCertError> {
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        self.issue(&mut params, name, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        params: &mut CertificateParams,
        common_name: &str,
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<Issued, DevCertError> {
        params.distinguished_name.remove(DnType::CommonName);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        validity(params, LEAF_DAYS);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &*self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// From yesterday for `days`.
fn validity(params: &mut CertificateParams, days: i64) {
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let ymd = |date: jiff::civil::Date| {
        rcgen::date_time_ymd(
            i32::from(date.year()),
            date.month().unsigned_abs(),
            date.day().unsigned_abs(),
        )
    };
    let from = today.yesterday().unwrap_or(today);
    let until = today
        .checked_add(jiff::Span::new().days(days))
        .unwrap_or(today);
    params.not_before = ymd(from);
    params.not_after = ymd(until);
}

/// The files [`write_dev_certs`] writes, by name in the output directory.
pub const DEV_CERT_FILES: [&str; 5] = [
    "ca.pem",
    "server.pem",
    "server-key.pem",
    "agent.pem",
    "agent-key.pem",
];

/// Writes a new CA (`ca.pem`), a server certificate for `server_names`
/// (`server.pem`, `server-key.pem`) and a client certificate named
/// `agent_name` (`agent.pem`, `agent-key.pem`) into `out` (created if
/// missing). Refuses to overwrite any of them. Returns the paths written.
pub fn write_dev_certs(
    out: &Path,
    server_names: &[String],
    agent_name: &str,
) -> Result<Vec<PathBuf>, DevCertError> {
    let paths: Vec<PathBuf> = DEV_CERT_FILES.iter().map(|name| out.join(name)).collect();
    if let Some(existing) = paths.iter().find(|path| path.exists()) {
        return Err(DevCertError::Exists(existing.clone()));
    }
    // Dated, so that two development CAs are told apart in errors and logs.
    let ca = DevCa::new(&format!(
        "Nudge development CA {}",
        jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ")
    ))?;
    let server = ca.server_cert(server_names)?;
    let agent = ca.client_cert(agent_name)?;
    std::fs::create_dir_all(out).map_err(|source| DevCertError::Write {
        path: out.to_owned(),
        source,
    })?;
    let contents = [
        (ca.cert_pem(), false),
        (server.cert_pem, false),
        (server.key_pem, true),
        (agent.cert_pem, false),
        (agent.key_pem, true),
    ];
    for (path, (pem, secret)) in paths.iter().zip(contents) {
        write_new(path, pem.as_bytes(), secret).map_err(|source| DevCertError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(paths)
}

/// Creates `path` (never overwrites), owner-only when `secret`.
fn write_new(path: &Path, contents: &[u8], secret: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_are_written_once_and_keys_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("certs");
        let names = ["localhost".to_owned(), "127.0.0.1".to_owned()];
        let written = write_dev_certs(&out, &names, "nudge-agent").unwrap();
        assert_eq!(written.len(), 5);
        let mode = |name: &str| {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::metadata(out.join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("server-key.pem"), 0o600);
        assert_eq!(mode("agent-key.pem"), 0o600);
        let again = write_dev_certs(&out, &names, "nudge-agent").unwrap_err();
        assert!(matches!(again, DevCertError::Exists(_)), "{again}");
    }
}
