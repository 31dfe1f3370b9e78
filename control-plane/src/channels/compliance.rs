//! The compliance test every channel passes, as test support: each
//! channel's integration test builds its channel and a [`Peer`] (a real
//! SMTP server, a local HTTP receiver, the inbox tree) and calls [`check`].
//!
//! It checks the [`Channel`] contract the delivery queue relies on:
//! (a) a valid message to a healthy peer gives a receipt;
//! (b) a peer that is down gives [`SendError::Retriable`];
//! (c) a recipient of the wrong kind gives [`SendError::Permanent`] without
//!     reaching the peer;
//! (d) the channel never retries by itself: the peer sees exactly one
//!     attempt per send, also when it answers with a temporary failure.
//!
//! HTTP channels also pass [`check_bounded_answer`] against an
//! [`EndlessAnswer`]: a real local server whose answer body never ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{Channel, OutboundMessage, Recipient, SendError};

/// The far side of a channel, as the compliance test needs to see it.
#[async_trait]
pub trait Peer: Send {
    /// A recipient this peer accepts.
    fn recipient(&self) -> Recipient;
    /// Delivery attempts the peer has seen so far, failed ones included.
    async fn attempts(&self) -> usize;
    /// Makes the peer answer every attempt with a temporary failure (and
    /// still count it). `false` when the peer cannot do that.
    async fn fail_temporarily(&mut self) -> bool;
    /// Makes the peer unreachable. `false` when the channel has no peer
    /// that can be down (in-app writes to its own store).
    async fn take_down(&mut self) -> bool;
}

/// A message with every field set, as the dispatcher would render it.
pub fn sample_message(delivery_id: &str) -> OutboundMessage {
    OutboundMessage {
        delivery_id: delivery_id.to_owned(),
        notification_id: format!("n-{delivery_id}"),
        notification_type: "payment_failed".to_owned(),
        category: Some("billing".to_owned()),
        subject: "Your payment failed".to_owned(),
        text_body: "We could not charge your card.".to_owned(),
        html_body: "<p>We could not charge your card.</p>".to_owned(),
        data: serde_json::json!({"amount": 42, "currency": "EUR"}),
        unsubscribe_url: Some("https://nudge.example/unsubscribe/token".to_owned()),
    }
}

/// Runs (a) to (d) in order, leaving the peer down (or failing) at the
/// end; panics with what went wrong.
pub async fn check(channel: &dyn Channel, peer: &mut dyn Peer) {
    let kind = channel.kind();

    // (a) healthy peer → receipt, one attempt.
    let before = peer.attempts().await;
    let receipt = channel
        .send(&sample_message("compliance-1"), &peer.recipient())
        .await
        .unwrap_or_else(|err| panic!("{kind}: a healthy peer should accept the message: {err}"));
    assert!(
        !receipt.answer.is_empty(),
        "{kind}: a receipt carries the provider's answer"
    );
    assert_eq!(
        peer.attempts().await,
        before + 1,
        "{kind}: one send is one attempt"
    );

    // (c) wrong recipient kind → Permanent, the peer is not contacted.
    let wrong = wrong_recipient(&peer.recipient());
    let before = peer.attempts().await;
    let err = channel
        .send(&sample_message("compliance-2"), &wrong)
        .await
        .expect_err("a recipient of the wrong kind must fail");
    assert!(
        matches!(err, SendError::Permanent { .. }),
        "{kind}: a wrong recipient kind is Permanent, got {err:?}"
    );
    assert_eq!(
        peer.attempts().await,
        before,
        "{kind}: a wrong recipient never reaches the peer"
    );

    // (d) a temporary failure is reported, not retried.
    if peer.fail_temporarily().await {
        let before = peer.attempts().await;
        let err = channel
            .send(&sample_message("compliance-3"), &peer.recipient())
            .await
            .expect_err("a failing peer must fail the send");
        assert!(
            matches!(err, SendError::Retriable { .. }),
            "{kind}: a temporary failure is Retriable, got {err:?}"
        );
        assert_eq!(
            peer.attempts().await,
            before + 1,
            "{kind}: the channel must not retry by itself"
        );
    }

    // (b) peer down → Retriable.
    if peer.take_down().await {
        let err = channel
            .send(&sample_message("compliance-4"), &peer.recipient())
            .await
            .expect_err("a peer that is down cannot accept the message");
        assert!(
            matches!(err, SendError::Retriable { .. }),
            "{kind}: a peer that is down is Retriable, got {err:?}"
        );
    }
}

/// A recipient of another kind than `right`.
fn wrong_recipient(right: &Recipient) -> Recipient {
    match right {
        Recipient::Phone { .. } => Recipient::User {
            user_id: "u-1".to_owned(),
        },
        _ => Recipient::Phone {
            number: "+15555550100".to_owned(),
        },
    }
}

/// A real HTTP/1.1 server on 127.0.0.1 that answers every request with
/// `status` and a chunked body that never ends, counting the bytes it
/// managed to write. A client that reads without a cap keeps it writing
/// until its own timeout; one that stops early makes its writes fail.
pub struct EndlessAnswer {
    addr: std::net::SocketAddr,
    written: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

/// Socket buffers on loopback can hold a few MiB that nobody read; a
/// client reading without a cap pulls hundreds of MiB in a few seconds.
const ENDLESS_BOUND: u64 = 32 * 1024 * 1024;

impl EndlessAnswer {
    pub async fn start(status: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let written = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let written = written.clone();
            async move {
                while let Ok((socket, _)) = listener.accept().await {
                    tokio::spawn(answer_endlessly(socket, status, written.clone()));
                }
            }
        });
        EndlessAnswer {
            addr,
            written,
            task,
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Body bytes written so far, across connections.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Waits for the writes to stop (the client closed), then checks that
    /// far less than an unbounded read would pull was written.
    pub async fn assert_read_bounded(&self) {
        let mut last = self.written();
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = self.written();
            if now == last {
                break;
            }
            assert!(
                now < ENDLESS_BOUND,
                "the client keeps reading an endless answer ({now} bytes so far)"
            );
            last = now;
        }
        assert!(last < ENDLESS_BOUND, "{last} bytes of the answer were read");
    }
}

impl Drop for EndlessAnswer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer_endlessly(mut socket: tokio::net::TcpStream, status: u16, written: Arc<AtomicU64>) {
    // Read the request head (and whatever of the body came with it); the
    // content does not matter.
    let mut head = Vec::new();
    let mut buffer = [0_u8; 4096];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
    }
    let start = format!(
        "HTTP/1.1 {status} Endless\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    if socket.write_all(start.as_bytes()).await.is_err() {
        return;
    }
    let data = vec![b'x'; 16 * 1024];
    let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
    chunk.extend_from_slice(&data);
    chunk.extend_from_slice(b"\r\n");
    while socket.write_all(&chunk).await.is_ok() {
        written.fetch_add(data.len() as u64, Ordering::Relaxed);
    }
}

/// Sends to `recipient` through `channel` while its peer answers endlessly
/// (`peer`): the send ends promptly (well inside a 30 s timeout) with
/// whatever the status says, and the answer kept is bounded.
pub async fn check_bounded_answer(
    channel: &dyn Channel,
    recipient: &Recipient,
    peer: &EndlessAnswer,
) {
    let kind = channel.kind();
    let started = Instant::now();
    let outcome = channel
        .send(&sample_message("compliance-endless"), recipient)
        .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "{kind}: an endless answer held the send for {took:?}"
    );
    let answer = match &outcome {
        Ok(receipt) => receipt.answer.clone(),
        Err(error) => error.answer().to_owned(),
    };
    assert!(
        answer.len() <= super::answer::MAX_ANSWER_BYTES + 1024,
        "{kind}: {} bytes of answer kept",
        answer.len()
    );
    peer.assert_read_bounded().await;
}
