//! Real handshakes over loopback between a [`ServerTls`] and a
//! [`ClientTls`] loaded from files, before and after the files change.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::client::{ClientFiles, ClientTls};
use crate::dev::{DevCa, Issued};
use crate::reload::{Watched, check_all};
use crate::server::{ServerFiles, ServerTls};
use crate::{PemFile, TlsError};

fn write(dir: &Path, name: &str, contents: &str) -> PemFile {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    PemFile::new("TEST", path)
}

fn write_pair(dir: &Path, prefix: &str, issued: &Issued) -> (PemFile, PemFile) {
    (
        write(dir, &format!("{prefix}.pem"), &issued.cert_pem),
        write(dir, &format!("{prefix}-key.pem"), &issued.key_pem),
    )
}

fn server_cert(ca: &DevCa) -> Issued {
    ca.server_cert(&["nudge.test".into()]).unwrap()
}

/// One connection: both handshakes, then a byte each way (in TLS 1.3 a
/// client learns that its certificate was refused only when it reads).
/// `Err` carries what each side saw.
async fn connect(server: &ServerTls, client: &ClientTls) -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = server.acceptor();
    let serving = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(crate::ALPN_H2));
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        tls.write_all(&byte).await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())
    });
    let name = ServerName::try_from("nudge.test").unwrap();
    let client_side = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut tls = client
            .connector()
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"x").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    }
    .await;
    let server_side = serving.await.unwrap();
    match (server_side, client_side) {
        (Ok(()), Ok(())) => Ok(()),
        (server, client) => Err(format!("server: {server:?}; client: {client:?}")),
    }
}

/// Checks everything once, as the watcher's next round would.
fn reload(server: &ServerTls, client: &ClientTls) {
    let mut all: Vec<Arc<dyn Watched>> = server.watched();
    all.extend(client.watched());
    check_all(&all);
}

#[tokio::test]
async fn mutual_tls_admits_only_certificates_of_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other_ca) = (DevCa::new("CA").unwrap(), DevCa::new("other CA").unwrap());
    let (cert, key) = write_pair(dir.path(), "server", &server_cert(&ca));
    let server = ServerTls::load(&ServerFiles {
        cert,
        key,
        client_ca: Some(write(dir.path(), "ca.pem", &ca.cert_pem())),
    })
    .unwrap();
    assert!(server.requires_client_certificates());
    let trust = Some(write(dir.path(), "trust.pem", &ca.cert_pem()));

    let good = write_pair(dir.path(), "agent", &ca.client_cert("agent").unwrap());
    let client = ClientTls::load(&ClientFiles {
        ca: trust.clone(),
        identity: Some(good),
    })
    .unwrap();
    connect(&server, &client).await.unwrap();

    let anonymous = ClientTls::load(&ClientFiles {
        ca: trust.clone(),
        identity: None,
    })
    .unwrap();
    let refused = connect(&server, &anonymous).await.unwrap_err();
    assert!(refused.contains("server: Err"), "{refused}");

    let stranger = write_pair(
        dir.path(),
        "stranger",
        &other_ca.client_cert("agent").unwrap(),
    );
    let stranger = ClientTls::load(&ClientFiles {
        ca: trust,
        identity: Some(stranger),
    })
    .unwrap();
    let refused = connect(&server, &stranger).await.unwrap_err();
    assert!(refused.contains("server: Err"), "{refused}");
}

#[tokio::test]
async fn the_server_certificate_is_verified_against_the_client_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other_ca) = (DevCa::new("CA").unwrap(), DevCa::new("other CA").unwrap());
    let (cert, key) = write_pair(dir.path(), "server", &server_cert(&ca));
    let server = ServerTls::load(&ServerFiles {
        cert,
        key,
        client_ca: None,
    })
    .unwrap();
    let wrong_trust = ClientTls::load(&ClientFiles {
        ca: Some(write(dir.path(), "trust.pem", &other_ca.cert_pem())),
        identity: None,
    })
    .unwrap();
    let refused = connect(&server, &wrong_trust).await.unwrap_err();
    assert!(refused.contains("client: Err"), "{refused}");
    // Without a bundle the webpki roots are used: a private CA is unknown.
    let public_roots = ClientTls::load(&ClientFiles {
        ca: None,
        identity: None,
    })
    .unwrap();
    assert!(connect(&server, &public_roots).await.is_err());
}

#[tokio::test]
async fn rotated_files_apply_to_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (DevCa::new("old CA").unwrap(), DevCa::new("new CA").unwrap());
    let (cert, key) = write_pair(dir.path(), "server", &server_cert(&old_ca));
    let client_ca = write(dir.path(), "client-ca.pem", &old_ca.cert_pem());
    let server = ServerTls::load(&ServerFiles {
        cert,
        key,
        client_ca: Some(client_ca),
    })
    .unwrap();
    let identity = write_pair(dir.path(), "agent", &new_ca.client_cert("agent").unwrap());
    let trust = write(dir.path(), "trust.pem", &new_ca.cert_pem());
    let client = ClientTls::load(&ClientFiles {
        ca: Some(trust),
        identity: Some(identity),
    })
    .unwrap();
    // The client trusts and is certified by the new CA only.
    assert!(connect(&server, &client).await.is_err());

    // The server moves to the new CA: certificate and client bundle.
    write_pair(dir.path(), "server", &server_cert(&new_ca));
    let bundle = format!("{}{}", old_ca.cert_pem(), new_ca.cert_pem());
    write(dir.path(), "client-ca.pem", &bundle);
    reload(&server, &client);
    connect(&server, &client).await.unwrap();

    // The client's certificate and trust move back to the old CA: refused
    // by its own bundle (the server presents a new-CA certificate) until
    // the bundle holds both.
    write_pair(dir.path(), "agent", &old_ca.client_cert("agent").unwrap());
    write(dir.path(), "trust.pem", &old_ca.cert_pem());
    reload(&server, &client);
    assert!(connect(&server, &client).await.is_err());
    write(dir.path(), "trust.pem", &bundle);
    reload(&server, &client);
    connect(&server, &client).await.unwrap();
}

#[tokio::test]
async fn broken_files_keep_the_working_material() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("CA").unwrap();
    let (cert, key) = write_pair(dir.path(), "server", &server_cert(&ca));
    let client_ca = write(dir.path(), "client-ca.pem", &ca.cert_pem());
    let server = ServerTls::load(&ServerFiles {
        cert: cert.clone(),
        key,
        client_ca: Some(client_ca.clone()),
    })
    .unwrap();
    let client = ClientTls::load(&ClientFiles {
        ca: Some(write(dir.path(), "trust.pem", &ca.cert_pem())),
        identity: Some(write_pair(
            dir.path(),
            "agent",
            &ca.client_cert("agent").unwrap(),
        )),
    })
    .unwrap();
    connect(&server, &client).await.unwrap();

    let half_cert = server_cert(&ca).cert_pem;
    std::fs::write(&cert.path, &half_cert[..half_cert.len() / 2]).unwrap();
    std::fs::write(&client_ca.path, "").unwrap();
    std::fs::write(
        dir.path().join("agent-key.pem"),
        "-----BEGIN PRIVATE KEY-----\n",
    )
    .unwrap();
    let mut all: Vec<Arc<dyn Watched>> = server.watched();
    all.extend(client.watched());
    let round = check_all(&all);
    assert_eq!((round.reloaded, round.failed, round.failing), (0, 3, 3));
    connect(&server, &client).await.unwrap();
}

#[test]
fn start_up_errors_name_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("CA").unwrap();
    let (cert, _) = write_pair(dir.path(), "server", &server_cert(&ca));
    let error = ServerTls::load(&ServerFiles {
        cert,
        key: PemFile::new("NUDGE_CP_TLS_KEY", dir.path().join("missing.pem")),
        client_ca: None,
    })
    .err()
    .unwrap();
    assert!(matches!(
        error,
        TlsError::Read {
            setting: "NUDGE_CP_TLS_KEY",
            ..
        }
    ));
    assert!(
        error.to_string().starts_with("NUDGE_CP_TLS_KEY: "),
        "{error}"
    );
}
