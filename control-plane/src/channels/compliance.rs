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

use async_trait::async_trait;

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
