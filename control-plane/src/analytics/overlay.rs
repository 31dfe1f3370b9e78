//! [`Overlay`]: one pass's changes to the `analytics` tree, held in memory
//! and read through, then committed in one sled transaction together with
//! the pass's cursor and the removal of the delivery facts it counted.
//!
//! Only the rollup worker writes the tree (erase takes the same lock), so
//! reading the tree under the overlay sees exactly the state the pass
//! started from plus its own changes.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::AnalyticsError;
use super::keys::{decode_counters, encode_counters};

enum Slot {
    /// A counter vector (see `keys::encode_counters`).
    Counters(Vec<i64>),
    /// A record, or `None` for a removal.
    Bytes(Option<Vec<u8>>),
}

pub struct Overlay<'a> {
    tree: &'a sled::Tree,
    slots: BTreeMap<Vec<u8>, Slot>,
}

impl<'a> Overlay<'a> {
    pub fn new(tree: &'a sled::Tree) -> Self {
        Overlay {
            tree,
            slots: BTreeMap::new(),
        }
    }

    /// Adds `deltas` element-wise to the counter vector at `key`.
    pub fn add(&mut self, key: Vec<u8>, deltas: &[(usize, i64)]) -> Result<(), AnalyticsError> {
        let values = self.counters_mut(key)?;
        for (index, delta) in deltas {
            if values.len() <= *index {
                values.resize(index + 1, 0);
            }
            values[*index] += delta;
        }
        Ok(())
    }

    /// Replaces the counter vector at `key`.
    pub fn set_counters(&mut self, key: Vec<u8>, values: Vec<i64>) {
        self.slots.insert(key, Slot::Counters(values));
    }

    /// The counter vector at `key` (empty when absent).
    pub fn counters(&mut self, key: Vec<u8>) -> Result<Vec<i64>, AnalyticsError> {
        Ok(self.counters_mut(key)?.clone())
    }

    fn counters_mut(&mut self, key: Vec<u8>) -> Result<&mut Vec<i64>, AnalyticsError> {
        let tree = self.tree;
        let slot = match self.slots.entry(key) {
            Entry::Occupied(slot) => slot.into_mut(),
            Entry::Vacant(slot) => {
                let stored = tree
                    .get(slot.key())?
                    .map(|bytes| decode_counters(&bytes))
                    .unwrap_or_default();
                slot.insert(Slot::Counters(stored))
            }
        };
        match slot {
            Slot::Counters(values) => Ok(values),
            Slot::Bytes(_) => Err(AnalyticsError::Corrupt(
                "a key is used both as counters and as a record".to_owned(),
            )),
        }
    }

    /// The record at `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, AnalyticsError> {
        match self.slots.get(key) {
            Some(Slot::Bytes(value)) => Ok(value.clone()),
            Some(Slot::Counters(values)) => Ok(Some(encode_counters(values))),
            None => Ok(self.tree.get(key)?.map(|bytes| bytes.to_vec())),
        }
    }

    pub fn contains(&self, key: &[u8]) -> Result<bool, AnalyticsError> {
        match self.slots.get(key) {
            Some(Slot::Bytes(value)) => Ok(value.is_some()),
            Some(Slot::Counters(_)) => Ok(true),
            None => Ok(self.tree.contains_key(key)?),
        }
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.slots.insert(key, Slot::Bytes(Some(value)));
    }

    pub fn remove(&mut self, key: Vec<u8>) {
        self.slots.insert(key, Slot::Bytes(None));
    }

    /// A JSON record.
    pub fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, AnalyticsError> {
        self.get(key)?
            .map(|bytes| {
                serde_json::from_slice(&bytes).map_err(|error| {
                    AnalyticsError::Corrupt(format!("{}: {error}", String::from_utf8_lossy(key)))
                })
            })
            .transpose()
    }

    pub fn put_json<T: serde::Serialize>(
        &mut self,
        key: Vec<u8>,
        value: &T,
    ) -> Result<(), AnalyticsError> {
        let bytes = serde_json::to_vec(value)
            .map_err(|error| AnalyticsError::Corrupt(error.to_string()))?;
        self.put(key, bytes);
        Ok(())
    }

    /// Whether any key from `start` to `end` (inclusive) is present, the
    /// overlay's changes included.
    pub fn any_key_in(&self, start: &[u8], end: &[u8]) -> Result<bool, AnalyticsError> {
        let bounds = (
            std::ops::Bound::Included(start.to_vec()),
            std::ops::Bound::Included(end.to_vec()),
        );
        if self
            .slots
            .range(bounds.clone())
            .any(|(_, slot)| !matches!(slot, Slot::Bytes(None)))
        {
            return Ok(true);
        }
        for entry in self.tree.range(bounds).keys() {
            let key = entry?;
            if !matches!(self.slots.get(key.as_ref()), Some(Slot::Bytes(None))) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Keys under `prefix`, the overlay's changes included (removed keys
    /// left out), in order.
    pub fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, AnalyticsError> {
        let mut keys: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
        for entry in self.tree.scan_prefix(prefix).keys() {
            keys.insert(entry?.to_vec(), true);
        }
        for (key, slot) in self.slots.range(prefix.to_vec()..) {
            if !key.starts_with(prefix) {
                break;
            }
            keys.insert(key.clone(), !matches!(slot, Slot::Bytes(None)));
        }
        Ok(keys
            .into_iter()
            .filter(|(_, present)| *present)
            .map(|(key, _)| key)
            .collect())
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Writes every change, removes `drained` from `facts`, in one
    /// transaction.
    pub fn commit(self, facts: &sled::Tree, drained: &[sled::IVec]) -> Result<(), AnalyticsError> {
        let Overlay { tree, slots } = self;
        let writes: Vec<(Vec<u8>, Option<Vec<u8>>)> = slots
            .into_iter()
            .map(|(key, slot)| match slot {
                Slot::Counters(values) => (key, Some(encode_counters(&values))),
                Slot::Bytes(value) => (key, value),
            })
            .collect();
        (tree, facts)
            .transaction(|(tree, facts)| {
                for (key, value) in &writes {
                    match value {
                        Some(value) => tree.insert(key.as_slice(), value.as_slice())?,
                        None => tree.remove(key.as_slice())?,
                    };
                }
                for key in drained {
                    facts.remove(key)?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|error| match error {
                TransactionError::Storage(error) => AnalyticsError::Sled(error),
                TransactionError::Abort(()) => AnalyticsError::Corrupt("commit aborted".to_owned()),
            })
    }
}
