//! The in-app channel over a real sled tree.

use nudge_control_plane::channels::compliance::{self, Peer, sample_message};
use nudge_control_plane::channels::in_app::{InAppChannel, InboxEntry};
use nudge_control_plane::channels::{Channel, Recipient, SendError};

fn inbox() -> (tempfile::TempDir, sled::Tree) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let tree = db.open_tree("inbox").unwrap();
    (dir, tree)
}

fn user(id: &str) -> Recipient {
    Recipient::User {
        user_id: id.to_owned(),
    }
}

/// The inbox tree is the peer: an attempt is a write to it. It cannot be
/// down or fail on request, so (b) and the failing half of (d) do not
/// apply.
struct InboxPeer(sled::Tree);

#[async_trait::async_trait]
impl Peer for InboxPeer {
    fn recipient(&self) -> Recipient {
        user("u-compliance")
    }

    async fn attempts(&self) -> usize {
        self.0.len()
    }

    async fn fail_temporarily(&mut self) -> bool {
        false
    }

    async fn take_down(&mut self) -> bool {
        false
    }
}

#[tokio::test]
async fn passes_the_compliance_test() {
    let (_dir, tree) = inbox();
    let channel = InAppChannel::new(tree.clone());
    compliance::check(&channel, &mut InboxPeer(tree)).await;
}

#[tokio::test]
async fn stores_one_entry_per_delivery_even_when_retried() {
    let (_dir, tree) = inbox();
    let channel = InAppChannel::new(tree.clone());
    let message = sample_message("d-1");
    let receipt = channel.send(&message, &user("alice")).await.unwrap();
    assert_eq!(receipt.answer, "stored");
    channel.send(&message, &user("alice")).await.unwrap();
    channel
        .send(&sample_message("d-2"), &user("alice"))
        .await
        .unwrap();
    channel
        .send(&sample_message("d-1"), &user("bob"))
        .await
        .unwrap();

    let alice: Vec<InboxEntry> = tree
        .scan_prefix(b"alice\0")
        .map(|item| serde_json::from_slice(&item.unwrap().1).unwrap())
        .collect();
    assert_eq!(alice.len(), 2);
    assert_eq!(alice[0].delivery_id, "d-1");
    assert_eq!(alice[0].subject, message.subject);
    assert_eq!(alice[0].text, message.text_body);
    assert_eq!(alice[0].data, message.data);
    assert_eq!(alice[1].delivery_id, "d-2");
    assert!(tree.get(InAppChannel::key("bob", "d-1")).unwrap().is_some());
}

#[tokio::test]
async fn rejects_a_bad_user_id() {
    let (_dir, tree) = inbox();
    let channel = InAppChannel::new(tree.clone());
    let err = channel
        .send(&sample_message("d"), &user("a\0b"))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::InvalidRecipient { .. }), "{err:?}");
    assert!(tree.is_empty());
}
