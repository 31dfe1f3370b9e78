//! The email channel against a real SMTP server: aiosmtpd, run from the
//! test venv's python (`NUDGE_TEST_PYTHON`, default `<workspace>/.venv/bin/python`,
//! which `scripts/test` builds) with `tests/peers/smtp_server.py`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use nudge_control_plane::channels::compliance::{self, Peer, sample_message};
use nudge_control_plane::channels::email::{EmailChannel, EmailConfig, EmailTls};
use nudge_control_plane::channels::{Channel, OutboundMessage, Recipient, SendError};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn python() -> PathBuf {
    match std::env::var_os("NUDGE_TEST_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"),
    }
}

/// Fails (never skips) when the venv lacks aiosmtpd.
fn require_aiosmtpd() -> PathBuf {
    let python = python();
    let ok = std::process::Command::new(&python)
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        ok,
        "{} cannot import aiosmtpd: run scripts/test once (it builds the venv), \
         or point NUDGE_TEST_PYTHON at a python with aiosmtpd installed",
        python.display()
    );
    python
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A running aiosmtpd on a fixed port, saving mail into `dir`.
struct SmtpServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl SmtpServer {
    async fn start(refuse_rcpt: Option<&str>, refuse_data: Option<&str>) -> Self {
        let mut server = SmtpServer {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.restart(refuse_rcpt, refuse_data).await;
        server
    }

    /// (Re)starts the server on the same port and directory.
    async fn restart(&mut self, refuse_rcpt: Option<&str>, refuse_data: Option<&str>) {
        self.stop().await;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/smtp_server.py");
        let mut command = Command::new(require_aiosmtpd());
        command
            .arg(script)
            .args(["--port", &self.port.to_string()])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        if let Some(code) = refuse_rcpt {
            command.args(["--rcpt-code", code]);
        }
        if let Some(code) = refuse_data {
            command.args(["--data-code", code]);
        }
        let mut child = command.spawn().expect("start the SMTP server");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the SMTP server did not start within 20 s");
        assert_eq!(
            ready.unwrap().as_deref(),
            Some("ready"),
            "the SMTP server failed to start"
        );
        self.child = Some(child);
    }

    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// RCPT commands seen: one per delivery attempt.
    fn attempts(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("attempts.log"))
            .map(|log| log.lines().count())
            .unwrap_or(0)
    }

    /// The saved messages, oldest first.
    fn messages(&self) -> Vec<String> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
            .collect();
        paths.sort_by_key(|path| {
            path.file_stem()
                .and_then(|stem| stem.to_str())
                .and_then(|stem| stem.parse::<u32>().ok())
        });
        paths
            .iter()
            .map(|path| std::fs::read_to_string(path).unwrap())
            .collect()
    }

    fn channel(&self) -> EmailChannel {
        EmailChannel::new(EmailConfig {
            host: "127.0.0.1".to_owned(),
            port: Some(self.port),
            tls: EmailTls::None,
            username: None,
            password: None,
            from: "Nudge <notify@nudge.example>".to_owned(),
            pool_max_size: 2,
            timeout: Duration::from_secs(5),
            callback_secret: None,
        })
        .unwrap()
    }
}

fn alice() -> Recipient {
    Recipient::Email {
        address: "alice@example.com".to_owned(),
        name: Some("Alice".to_owned()),
    }
}

struct SmtpPeer(SmtpServer);

#[async_trait]
impl Peer for SmtpPeer {
    fn recipient(&self) -> Recipient {
        alice()
    }

    async fn attempts(&self) -> usize {
        self.0.attempts()
    }

    async fn fail_temporarily(&mut self) -> bool {
        self.0.restart(Some("451"), None).await;
        true
    }

    async fn take_down(&mut self) -> bool {
        self.0.stop().await;
        true
    }
}

#[tokio::test]
async fn passes_the_compliance_test() {
    let server = SmtpServer::start(None, None).await;
    let channel = server.channel();
    compliance::check(&channel, &mut SmtpPeer(server)).await;
}

#[tokio::test]
async fn delivers_text_html_and_unsubscribe_headers() {
    let server = SmtpServer::start(None, None).await;
    let message = sample_message("delivery-7");
    let receipt = server.channel().send(&message, &alice()).await.unwrap();
    assert_eq!(
        receipt.provider_message_id.as_deref(),
        Some("<delivery-7@nudge.example>")
    );
    assert!(receipt.answer.starts_with("250 "), "{receipt:?}");
    assert!(receipt.answer.contains("queued as 1.eml"), "{receipt:?}");

    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    let mail = &messages[0];
    for expected in [
        "Subject: Your payment failed",
        "From: Nudge <notify@nudge.example>",
        "To: Alice <alice@example.com>",
        "Message-ID: <delivery-7@nudge.example>",
        "List-Unsubscribe: <https://nudge.example/unsubscribe/token>",
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        "multipart/alternative",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Type: text/html; charset=utf-8",
        "We could not charge your card.",
        "<p>We could not charge your card.</p>",
    ] {
        assert!(mail.contains(expected), "missing {expected:?} in:\n{mail}");
    }
}

#[tokio::test]
async fn text_only_without_html_and_no_unsubscribe_without_url() {
    let server = SmtpServer::start(None, None).await;
    let message = OutboundMessage {
        html_body: String::new(),
        unsubscribe_url: None,
        ..sample_message("plain")
    };
    server.channel().send(&message, &alice()).await.unwrap();
    let mail = &server.messages()[0];
    assert!(
        mail.contains("Content-Type: text/plain; charset=utf-8"),
        "{mail}"
    );
    assert!(!mail.contains("multipart"), "{mail}");
    assert!(!mail.contains("List-Unsubscribe"), "{mail}");
}

#[tokio::test]
async fn temporary_refusals_are_retriable() {
    for (rcpt, data) in [
        (Some("451"), None),
        (None, Some("451")),
        (Some("450"), None),
    ] {
        let server = SmtpServer::start(rcpt, data).await;
        let err = server
            .channel()
            .send(&sample_message("t"), &alice())
            .await
            .unwrap_err();
        assert!(
            matches!(err, SendError::Retriable { .. }),
            "{rcpt:?}/{data:?}: {err:?}"
        );
        assert!(err.answer().contains("45"), "{err:?}");
        assert_eq!(server.attempts(), 1, "no retry inside the channel");
        assert!(server.messages().is_empty());
    }
}

#[tokio::test]
async fn unknown_mailbox_is_an_invalid_recipient() {
    for code in ["550", "551", "553"] {
        let server = SmtpServer::start(Some(code), None).await;
        let err = server
            .channel()
            .send(&sample_message("u"), &alice())
            .await
            .unwrap_err();
        assert!(
            matches!(err, SendError::InvalidRecipient { .. }),
            "{code}: {err:?}"
        );
        assert!(err.answer().contains(code), "{err:?}");
    }
}

#[tokio::test]
async fn other_permanent_refusals_are_permanent() {
    for (rcpt, data) in [
        (Some("554"), None),
        (None, Some("552")),
        (None, Some("554")),
    ] {
        let server = SmtpServer::start(rcpt, data).await;
        let err = server
            .channel()
            .send(&sample_message("p"), &alice())
            .await
            .unwrap_err();
        assert!(
            matches!(err, SendError::Permanent { .. }),
            "{rcpt:?}/{data:?}: {err:?}"
        );
    }
}

#[tokio::test]
async fn server_down_then_back_the_pool_recovers() {
    let mut server = SmtpServer::start(None, None).await;
    let channel = server.channel();
    // A pooled connection exists and then dies with the server.
    channel
        .send(&sample_message("before"), &alice())
        .await
        .unwrap();
    server.stop().await;

    let err = channel
        .send(&sample_message("while-down"), &alice())
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Retriable { .. }), "{err:?}");

    server.restart(None, None).await;
    let receipt = channel
        .send(&sample_message("after"), &alice())
        .await
        .unwrap();
    assert!(receipt.answer.starts_with("250"), "{receipt:?}");
    let messages = server.messages();
    assert_eq!(messages.len(), 2);
    assert!(
        messages[1].contains("Message-ID: <after@nudge.example>"),
        "{}",
        messages[1]
    );
}

#[tokio::test]
async fn malformed_address_is_an_invalid_recipient() {
    let server = SmtpServer::start(None, None).await;
    let recipient = Recipient::Email {
        address: "not an address".to_owned(),
        name: None,
    };
    let err = server
        .channel()
        .send(&sample_message("m"), &recipient)
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::InvalidRecipient { .. }), "{err:?}");
    assert_eq!(server.attempts(), 0);
}
