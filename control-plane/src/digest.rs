//! Digest buckets: notifications held for a user's hourly, daily or weekly
//! digest, grouped so that each group becomes one message.
//!
//! # Promises
//!
//! * **A group is one message.** Items are grouped by the time the digest
//!   goes out, the user, the notification type and the channel: every
//!   notification of that type the user got on that channel during the
//!   window is one item of one digest.
//! * **Durable and at least once.** Items are in sled (tree
//!   `digest_items`, flushed when added) until [`DigestStore::remove`] after
//!   the digest's delivery was enqueued; a crash in between sends the same
//!   group again, which the engine absorbs (the digest's notification is
//!   deduped by its source id, its delivery by its derived id).
//! * **In time order.** [`DigestStore::due`] returns the groups whose time
//!   has come, oldest first, each with its items in the order they were
//!   added.
//!
//! [`DigestStore::erase_user`] (privacy) drops every held item of a user;
//! it scans the whole tree (keys start with the due time), which holds
//! only what waits for the next digests.
//!
//! Keys are `due-at ms (8 bytes, big-endian) | user \0 | type \0 | channel
//! byte | notification id`, so due groups are one range scan from the
//! start and a group's items sit next to each other.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::channels::ChannelKind;

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
}

impl DigestKey {
    /// The source id of the digest's own notification: stable, so a digest
    /// fired twice (a crash) creates one notification.
    pub fn source_id(&self) -> String {
        format!(
            "digest:{}:{}:{}:{}",
            self.channel,
            self.due_at.as_millisecond(),
            self.notification_type,
            self.user_id
        )
    }

    fn prefix(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(8 + self.user_id.len() + self.notification_type.len() + 3);
        key.extend_from_slice(&self.due_at.as_millisecond().to_be_bytes());
        key.extend_from_slice(self.user_id.as_bytes());
        key.push(0);
        key.extend_from_slice(self.notification_type.as_bytes());
        key.push(0);
        key.push(channel_byte(self.channel));
        key
    }

    /// Reads the group part of a stored key; `None` for a key this module
    /// did not write.
    fn parse(key: &[u8]) -> Option<(DigestKey, usize)> {
        let millis = i64::from_be_bytes(key.get(..8)?.try_into().ok()?);
        let rest = &key[8..];
        let user_end = rest.iter().position(|b| *b == 0)?;
        let type_end = user_end + 1 + rest[user_end + 1..].iter().position(|b| *b == 0)?;
        let channel = *rest.get(type_end + 1)?;
        let digest_key = DigestKey {
            due_at: Timestamp::from_millisecond(millis).ok()?,
            user_id: String::from_utf8(rest[..user_end].to_vec()).ok()?,
            notification_type: String::from_utf8(rest[user_end + 1..type_end].to_vec()).ok()?,
            channel: *ChannelKind::ALL.get(usize::from(channel))?,
        };
        Some((digest_key, 8 + type_end + 2))
    }
}

fn channel_byte(channel: ChannelKind) -> u8 {
    ChannelKind::ALL
        .iter()
        .position(|c| *c == channel)
        .expect("every channel is in ALL") as u8
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
    Storage(#[from] sled::Error),
    #[error("digest item {key} is unreadable: {message}")]
    Corrupt { key: String, message: String },
    #[error("a user id or type with a NUL byte cannot be digested")]
    InvalidKey,
}

#[derive(Debug, Clone)]
pub struct DigestStore {
    items: sled::Tree,
}

impl DigestStore {
    pub fn open(db: &sled::Db) -> Result<Self, DigestError> {
        Ok(DigestStore {
            items: db.open_tree("digest_items")?,
        })
    }

    /// Holds `item` for the digest `key` (flushed). Adding the same
    /// notification twice keeps one item.
    pub async fn add(&self, key: &DigestKey, item: &DigestItem) -> Result<(), DigestError> {
        if key.user_id.contains('\0') || key.notification_type.contains('\0') {
            return Err(DigestError::InvalidKey);
        }
        let mut item_key = key.prefix();
        item_key.extend_from_slice(item.notification_id.as_bytes());
        let bytes = serde_json::to_vec(item).expect("a digest item serialises");
        self.items.insert(item_key, bytes)?;
        self.items.flush_async().await?;
        Ok(())
    }

    /// Up to `limit` groups due at `now`, oldest first, each whole (a
    /// group is never split across calls).
    pub fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<DueDigest>, DigestError> {
        let end = now.as_millisecond().saturating_add(1).to_be_bytes();
        let mut groups: Vec<DueDigest> = Vec::new();
        for entry in self.items.range(..end.as_slice()) {
            let (raw_key, value) = entry?;
            let corrupt = |message: String| DigestError::Corrupt {
                key: String::from_utf8_lossy(&raw_key).into_owned(),
                message,
            };
            let (key, _) = DigestKey::parse(&raw_key).ok_or_else(|| corrupt("bad key".into()))?;
            let item: DigestItem =
                serde_json::from_slice(&value).map_err(|error| corrupt(error.to_string()))?;
            match groups.last_mut() {
                Some(group) if group.key == key => group.items.push(item),
                _ => {
                    if groups.len() == limit {
                        break;
                    }
                    groups.push(DueDigest {
                        key,
                        items: vec![item],
                    });
                }
            }
        }
        for group in &mut groups {
            group.items.sort_by(|a, b| {
                (a.created_at, &a.notification_id).cmp(&(b.created_at, &b.notification_id))
            });
        }
        Ok(groups)
    }

    /// Forgets the group's items (its digest was enqueued).
    pub fn remove(&self, key: &DigestKey) -> Result<(), DigestError> {
        let mut batch = sled::Batch::default();
        for entry in self.items.scan_prefix(key.prefix()) {
            let (item_key, _) = entry?;
            batch.remove(item_key);
        }
        self.items.apply_batch(batch)?;
        self.items.flush()?;
        Ok(())
    }

    /// Removes every item held for `user_id`; returns how many. Flushed.
    pub fn erase_user(&self, user_id: &str) -> Result<usize, DigestError> {
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        for entry in self.items.iter().keys() {
            let key = entry?;
            if DigestKey::parse(&key).is_some_and(|(group, _)| group.user_id == user_id) {
                batch.remove(key);
                removed += 1;
            }
        }
        self.items.apply_batch(batch)?;
        self.items.flush()?;
        Ok(removed)
    }

    /// Items held now, for the queue-depth view and tests.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
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
        let store = DigestStore::open(&sled::open(dir.path()).unwrap()).unwrap();
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
                .unwrap()
                .is_empty()
        );
        let due = store
            .due(Timestamp::from_second(1_000_000).unwrap(), 10)
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
            .unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].items.len(), 1);

        store.remove(&daily).unwrap();
        let rest = store
            .due(Timestamp::from_second(3_000_000).unwrap(), 10)
            .unwrap();
        assert_eq!(rest.len(), 4);
        assert!(rest.iter().all(|group| group.key != daily));
        assert_eq!(store.len(), 4);
    }

    #[test]
    fn source_ids_differ_per_group() {
        let a = key(1, "u1", "comment", ChannelKind::Email).source_id();
        let b = key(1, "u1", "comment", ChannelKind::InApp).source_id();
        let c = key(2, "u1", "comment", ChannelKind::Email).source_id();
        assert!(a != b && a != c && b != c);
    }
}
