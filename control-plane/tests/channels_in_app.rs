//! The in-app channel over a real inbox (embedded SQL).

use nudge_control_plane::channels::compliance::{self, Peer, sample_message};
use nudge_control_plane::channels::in_app::InAppChannel;
use nudge_control_plane::channels::{Channel, Recipient, SendError};
use nudge_control_plane::inbox::{InboxQuery, InboxStore};

async fn inbox() -> (tempfile::TempDir, InboxStore) {
    let dir = tempfile::tempdir().unwrap();
    let stores = nudge_control_plane::storage::Stores::open_embedded(dir.path())
        .await
        .unwrap();
    (dir, stores.inbox)
}

fn user(id: &str) -> Recipient {
    Recipient::User {
        user_id: id.to_owned(),
    }
}

async fn all(inbox: &InboxStore, user: &str) -> Vec<nudge_control_plane::inbox::InboxItem> {
    let query = InboxQuery {
        limit: 100,
        ..InboxQuery::default()
    };
    inbox.list(user, &query).await.unwrap().items
}

/// The inbox is the peer: an attempt is an add to it. It cannot be down
/// or fail on request, so (b) and the failing half of (d) do not apply.
struct InboxPeer(InboxStore);

#[async_trait::async_trait]
impl Peer for InboxPeer {
    fn recipient(&self) -> Recipient {
        user("u-compliance")
    }

    async fn attempts(&self) -> usize {
        self.0
            .changes_after("u-compliance", 0, 1000)
            .await
            .unwrap()
            .len()
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
    let (_dir, inbox) = inbox().await;
    let channel = InAppChannel::new(inbox.clone());
    compliance::check(&channel, &mut InboxPeer(inbox)).await;
}

#[tokio::test]
async fn stores_one_item_per_delivery_even_when_retried() {
    let (_dir, inbox) = inbox().await;
    let channel = InAppChannel::new(inbox.clone());
    let message = sample_message("d-1");
    let receipt = channel.send(&message, &user("alice")).await.unwrap();
    assert_eq!(receipt.answer, "stored");
    let retried = channel.send(&message, &user("alice")).await.unwrap();
    assert_eq!(retried.answer, "already stored");
    channel
        .send(&sample_message("d-2"), &user("alice"))
        .await
        .unwrap();
    channel
        .send(&sample_message("d-1"), &user("bob"))
        .await
        .unwrap();

    let alice = all(&inbox, "alice").await;
    assert_eq!(alice.len(), 2);
    let first = alice.iter().find(|item| item.id == "d-1").unwrap();
    assert_eq!(first.title, message.subject);
    assert_eq!(first.body, message.text_body);
    assert_eq!(first.data, message.data);
    assert_eq!(first.category.as_deref(), Some("billing"));
    assert_eq!(inbox.counts("alice").await.unwrap().unread, 2);
    assert_eq!(all(&inbox, "bob").await.len(), 1);
}

#[tokio::test]
async fn refuses_other_recipients_and_bad_user_ids() {
    let (_dir, inbox) = inbox().await;
    let channel = InAppChannel::new(inbox);
    let email = Recipient::Email {
        address: "a@example.com".into(),
        name: None,
    };
    assert!(matches!(
        channel.send(&sample_message("d"), &email).await,
        Err(SendError::Permanent { .. })
    ));
    assert!(matches!(
        channel.send(&sample_message("d"), &user("bad\0id")).await,
        Err(SendError::InvalidRecipient { .. })
    ));
}
