//! Digest buckets: notifications held for a user's hourly, daily or weekly
//! digest, grouped so that each group becomes one message.
//!
//! # Promises
//!
//! * **A group is one message.** Items are grouped by the time the digest
//!   goes out, the user, the notification type, the channel and the
//!   type's digest group: every notification of that type the user got on
//!   that channel during the window — with the same value of the type's
//!   `digest_key` field, when it names one ([`group_of`]) — is one item of
//!   one digest.
//! * **Durable and at least once.** Items are in SQL (table
//!   `digest_items`, see `storage::digests`), committed when added, until
//!   [`DigestStore::remove`] after the digest's delivery was enqueued; a
//!   crash in between sends the same group again, which the engine absorbs
//!   (the digest's notification is deduped by its source id, its delivery
//!   by its derived id). `remove` deletes only the items that were sent.
//! * **In time order.** [`DigestStore::due`] returns the groups whose time
//!   has come, oldest first, each whole (a limit never splits one), with
//!   its items in the order the notifications were created.
//!
//! [`DigestStore::erase_user`] (privacy) drops every held item of a user
//! (an index on the user, no scan).
//!
//! A user id or type with a NUL byte is refused ([`DigestError::InvalidKey`]):
//! PostgreSQL's `TEXT` cannot hold it, and a refusal is permanent, not a
//! storage failure worth retrying.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::channels::ChannelKind;
use crate::storage::DigestTable;

/// One notification held for a digest: what the digest template shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DigestItem {
    pub notification_id: String,
    pub created_at: Timestamp,
    /// The notification rendered for the channel on its own, so a digest
    /// can list each item's title or subject (empty when it has none).
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub text: String,
    /// The notification's data, for templates that summarise it.
    #[serde(default)]
    pub data: Value,
}

/// Which digest an item belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DigestKey {
    pub due_at: Timestamp,
    pub user_id: String,
    pub notification_type: String,
    pub channel: ChannelKind,
    /// The value of the type's `digest_key` field in the notification's
    /// data ([`group_of`]); empty for a type without one, or an item
    /// without the field.
    pub group: String,
}

impl DigestKey {
    /// The source id of the digest's own notification: stable, so a digest
    /// fired twice (a crash) creates one notification.
    ///
    /// A group's id carries a digest of the group's value after the type
    /// (`#` and 16 hex digits: no type name holds a `#`), so no user id or
    /// value can make two groups' ids alike, and ungrouped digests keep the
    /// ids they always had.
    pub fn source_id(&self) -> String {
        let group = if self.group.is_empty() {
            String::new()
        } else {
            use sha2::{Digest, Sha256};
            let digest = Sha256::digest(self.group.as_bytes());
            let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
            format!("#{hex}")
        };
        format!(
            "digest:{}:{}:{}{group}:{}",
            self.channel,
            self.due_at.as_millisecond(),
            self.notification_type,
            self.user_id
        )
    }
}

/// Longest group value kept as it is; a longer one (or one holding a NUL,
/// which PostgreSQL's `TEXT` refuses) is replaced by `sha256:` and its
/// hex digest, which groups the same.
pub const MAX_GROUP_LEN: usize = 200;

/// The digest group of a notification with `data` for a type whose
/// `digest_key` is `path` (dot-separated field names, e.g. `project.id`):
/// the field's value (a string as it is, any other JSON as its text), or
/// `""` when the field is missing or `null`.
pub fn group_of(data: &serde_json::Map<String, Value>, path: &str) -> String {
    let mut parts = path.split('.');
    let mut value = parts.next().and_then(|first| data.get(first));
    for part in parts {
        value = value.and_then(|v| v.get(part));
    }
    let text = match value {
        None | Some(Value::Null) => return String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    };
    if text.len() > MAX_GROUP_LEN || text.contains('\0') {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(text.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        return format!("sha256:{hex}");
    }
    text
}

/// A due digest: its key and items.
#[derive(Debug, Clone, PartialEq)]
pub struct DueDigest {
    pub key: DigestKey,
    pub items: Vec<DigestItem>,
}

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("digest storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
    #[error("a user id or type with a NUL byte cannot be digested")]
    InvalidKey,
}

/// The held digest items, over their table. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DigestStore {
    table: DigestTable,
}

impl DigestStore {
    pub fn new(table: DigestTable) -> Self {
        DigestStore { table }
    }

    /// Holds `item` for the digest `key` (committed); `false` when its
    /// notification was folded into a digest on this channel before (also
    /// one already sent) or the user is erased.
    pub async fn add(&self, key: &DigestKey, item: &DigestItem) -> Result<bool, DigestError> {
        if key.user_id.contains('\0') || key.notification_type.contains('\0') {
            return Err(DigestError::InvalidKey);
        }
        Ok(self.table.add(key, item).await?)
    }

    /// Up to `limit` groups due at `now`, oldest first, each whole (a
    /// group is never split across calls).
    pub async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<DueDigest>, DigestError> {
        let mut groups = self.table.due(now, limit).await?;
        for group in &mut groups {
            group.items.sort_by(|a, b| {
                (a.created_at, &a.notification_id).cmp(&(b.created_at, &b.notification_id))
            });
        }
        Ok(groups)
    }

    /// Forgets the group's items that `digest` holds (its digest was
    /// enqueued).
    pub async fn remove(&self, digest: &DueDigest) -> Result<(), DigestError> {
        Ok(self.table.remove(digest).await?)
    }

    /// Forgets the folds of digests due before `cutoff` (with the
    /// notifications' retention); returns how many.
    pub async fn prune_folds(&self, cutoff: Timestamp) -> Result<u64, DigestError> {
        Ok(self.table.prune_folds(cutoff).await?)
    }

    /// Removes every item held for `user_id`, and the record of what was
    /// folded for them; returns how many items.
    pub async fn erase_user(&self, user_id: &str) -> Result<usize, DigestError> {
        Ok(self.table.erase_user(user_id).await?)
    }

    /// Items held now, for the queue-depth view and tests.
    pub async fn count(&self) -> Result<usize, DigestError> {
        Ok(self.table.count().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(at: i64, user: &str, kind: &str, channel: ChannelKind) -> DigestKey {
        DigestKey {
            due_at: Timestamp::from_second(at).unwrap(),
            user_id: user.into(),
            notification_type: kind.into(),
            channel,
            group: String::new(),
        }
    }

    fn item(id: &str, at: i64) -> DigestItem {
        DigestItem {
            notification_id: id.into(),
            created_at: Timestamp::from_second(at).unwrap(),
            subject: format!("subject {id}"),
            title: String::new(),
            text: String::new(),
            data: Value::Null,
        }
    }

    #[tokio::test]
    async fn groups_come_due_whole_and_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let stores = crate::storage::Stores::open_embedded(dir.path())
            .await
            .unwrap();
        let store = stores.digests.clone();
        let daily = key(1_000_000, "u1", "comment", ChannelKind::Email);
        let other_user = key(1_000_000, "u2", "comment", ChannelKind::Email);
        let other_channel = key(1_000_000, "u1", "comment", ChannelKind::InApp);
        let hourly_earlier = key(900_000, "u1", "like", ChannelKind::Email);
        let later = key(2_000_000, "u1", "comment", ChannelKind::Email);
        store.add(&daily, &item("n2", 20)).await.unwrap();
        store.add(&daily, &item("n1", 10)).await.unwrap();
        store.add(&daily, &item("n1", 10)).await.unwrap(); // replay
        store.add(&other_user, &item("n3", 11)).await.unwrap();
        store.add(&other_channel, &item("n1", 10)).await.unwrap();
        store.add(&hourly_earlier, &item("n4", 5)).await.unwrap();
        store.add(&later, &item("n5", 30)).await.unwrap();

        assert!(
            store
                .due(Timestamp::from_second(899_999).unwrap(), 10)
                .await
                .unwrap()
                .is_empty()
        );
        let due = store
            .due(Timestamp::from_second(1_000_000).unwrap(), 10)
            .await
            .unwrap();
        let keys: Vec<&DigestKey> = due.iter().map(|group| &group.key).collect();
        assert_eq!(keys.len(), 4);
        assert_eq!(keys[0], &hourly_earlier);
        assert!(
            keys.contains(&&daily) && keys.contains(&&other_user) && keys.contains(&&other_channel)
        );
        let daily_items: Vec<&str> = due
            .iter()
            .find(|group| group.key == daily)
            .unwrap()
            .items
            .iter()
            .map(|item| item.notification_id.as_str())
            .collect();
        assert_eq!(daily_items, ["n1", "n2"]);

        // A limit never splits a group.
        let first = store
            .due(Timestamp::from_second(1_000_000).unwrap(), 2)
            .await
            .unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].items.len(), 1);

        let daily_digest = due.iter().find(|group| group.key == daily).unwrap();
        store.remove(daily_digest).await.unwrap();
        let rest = store
            .due(Timestamp::from_second(3_000_000).unwrap(), 10)
            .await
            .unwrap();
        assert_eq!(rest.len(), 4);
        assert!(rest.iter().all(|group| group.key != daily));
        assert_eq!(store.count().await.unwrap(), 4);
    }

    #[test]
    fn a_group_is_the_digest_key_fields_value() {
        let data = serde_json::json!({
            "project": {"id": 42, "name": "Apollo"},
            "board": "b-1",
            "none": null,
            "long": "x".repeat(MAX_GROUP_LEN + 1),
            "nul": "a\u{0}b",
        });
        let data = data.as_object().unwrap();
        assert_eq!(group_of(data, "board"), "b-1");
        assert_eq!(group_of(data, "project.id"), "42");
        assert_eq!(group_of(data, "project.name"), "Apollo");
        assert_eq!(group_of(data, "project"), r#"{"id":42,"name":"Apollo"}"#);
        for missing in ["none", "absent", "project.owner", "board.x"] {
            assert_eq!(group_of(data, missing), "", "{missing}");
        }
        for hashed in ["long", "nul"] {
            let group = group_of(data, hashed);
            assert!(group.starts_with("sha256:") && group.len() == 71, "{group}");
        }
        // Ungrouped digests keep the ids they always had; groups differ.
        let plain = key(5, "u", "t", ChannelKind::Email);
        assert_eq!(plain.source_id(), "digest:email:5000:t:u");
        let grouped = |group: &str| DigestKey {
            group: group.to_owned(),
            ..plain.clone()
        };
        assert_ne!(grouped("a").source_id(), grouped("b").source_id());
        assert_ne!(grouped("a").source_id(), plain.source_id());
        assert!(grouped("a").source_id().starts_with("digest:email:5000:t#"));
    }

    #[test]
    fn source_ids_differ_per_group() {
        let a = key(1, "u1", "comment", ChannelKind::Email).source_id();
        let b = key(1, "u1", "comment", ChannelKind::InApp).source_id();
        let c = key(2, "u1", "comment", ChannelKind::Email).source_id();
        assert!(a != b && a != c && b != c);
    }
}
