//! [`Overlay`]: one pass's changes to the `analytics` tree, held in memory
//! and read through, then committed in one sled transaction together with
//! the pass's cursor and the removal of the delivery facts it counted.
//!
//! Actor records ([`ActorState`]) are held decoded, so a pass decodes and
//! encodes each actor once however many of its events it folds; the
//! commit keeps the open-sessions index (`as`) in step with them.
//!
//! Only the rollup worker writes the tree (erase takes the same lock), so
//! reading the tree under the overlay sees exactly the state the pass
//! started from plus its own changes.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::AnalyticsError;
use super::actor::ActorState;
use super::keys::{decode_counters, encode_counters};
use super::layout::{actor_key, open_session_key};

enum Slot {
    /// A counter vector (see `keys::encode_counters`).
    Counters(Vec<i64>),
    /// A record, or `None` for a removal.
    Bytes(Option<Vec<u8>>),
}

/// An actor record as the pass sees it.
struct ActorSlot {
    state: ActorSlotState,
    /// Whether the record is in the tree (so a removal must be written).
    stored: bool,
    /// Whether the stored record has an open session (so the commit
    /// knows whether the open-sessions index changes).
    was_open: bool,
    /// Put back or removed: only such records are written.
    changed: bool,
}

enum ActorSlotState {
    Present(ActorState),
    Absent,
    /// Taken by [`Overlay::take_actor`] and not put back yet.
    CheckedOut,
}

pub struct Overlay<'a> {
    tree: &'a sled::Tree,
    slots: BTreeMap<Vec<u8>, Slot>,
    actors: BTreeMap<String, ActorSlot>,
}

impl<'a> Overlay<'a> {
    pub fn new(tree: &'a sled::Tree) -> Self {
        Overlay {
            tree,
            slots: BTreeMap::new(),
            actors: BTreeMap::new(),
        }
    }

    fn actor_slot(&mut self, actor: &str) -> Result<&mut ActorSlot, AnalyticsError> {
        if !self.actors.contains_key(actor) {
            let slot = match self.tree.get(actor_key(actor))? {
                Some(bytes) => {
                    let state = ActorState::decode(&bytes)?;
                    ActorSlot {
                        was_open: state.detail.open_session.is_some(),
                        state: ActorSlotState::Present(state),
                        stored: true,
                        changed: false,
                    }
                }
                None => ActorSlot {
                    state: ActorSlotState::Absent,
                    stored: false,
                    was_open: false,
                    changed: false,
                },
            };
            self.actors.insert(actor.to_owned(), slot);
        }
        self.actors
            .get_mut(actor)
            .ok_or_else(|| AnalyticsError::Corrupt("actor slot vanished".to_owned()))
    }

    /// Takes `actor`'s record out to change it (`None` when it has
    /// none); [`Overlay::put_actor`] puts it back. Committing with a
    /// record still taken is an error.
    pub fn take_actor(&mut self, actor: &str) -> Result<Option<ActorState>, AnalyticsError> {
        let slot = self.actor_slot(actor)?;
        match std::mem::replace(&mut slot.state, ActorSlotState::CheckedOut) {
            ActorSlotState::Present(state) => {
                // Taken to be changed: written back (or the commit fails).
                slot.changed = true;
                Ok(Some(state))
            }
            ActorSlotState::Absent => {
                slot.state = ActorSlotState::Absent;
                Ok(None)
            }
            ActorSlotState::CheckedOut => Err(AnalyticsError::Corrupt(format!(
                "actor record {actor} taken twice"
            ))),
        }
    }

    pub fn put_actor(&mut self, actor: &str, state: ActorState) -> Result<(), AnalyticsError> {
        let slot = self.actor_slot(actor)?;
        slot.state = ActorSlotState::Present(state);
        slot.changed = true;
        Ok(())
    }

    /// Removes `actor`'s record; returns whether it had one.
    pub fn remove_actor(&mut self, actor: &str) -> Result<bool, AnalyticsError> {
        let slot = self.actor_slot(actor)?;
        let had = !matches!(slot.state, ActorSlotState::Absent);
        slot.state = ActorSlotState::Absent;
        slot.changed = true;
        Ok(had)
    }

    /// Adds `deltas` element-wise to the counter vector at `key`. Counters
    /// saturate rather than wrap (money sums among them): a wrapped sum
    /// would turn spend negative, a debug build would panic and stall the
    /// worker on the same event forever.
    pub fn add(&mut self, key: Vec<u8>, deltas: &[(usize, i64)]) -> Result<(), AnalyticsError> {
        let values = self.counters_mut(key)?;
        for (index, delta) in deltas {
            if values.len() <= *index {
                values.resize(index + 1, 0);
            }
            values[*index] = values[*index].saturating_add(*delta);
        }
        Ok(())
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
        self.slots.is_empty() && self.actors.values().all(|slot| !slot.changed)
    }

    /// Writes every change in one transaction.
    pub fn commit(self) -> Result<(), AnalyticsError> {
        let Overlay {
            tree,
            slots,
            actors,
        } = self;
        let mut writes: Vec<(Vec<u8>, Option<Vec<u8>>)> = slots
            .into_iter()
            .map(|(key, slot)| match slot {
                Slot::Counters(values) => (key, Some(encode_counters(&values))),
                Slot::Bytes(value) => (key, value),
            })
            .collect();
        for (actor, slot) in actors.into_iter().filter(|(_, slot)| slot.changed) {
            let open = match &slot.state {
                ActorSlotState::Present(state) => {
                    writes.push((actor_key(&actor), Some(state.encode()?)));
                    state.detail.open_session.is_some()
                }
                ActorSlotState::Absent => {
                    if slot.stored {
                        writes.push((actor_key(&actor), None));
                    }
                    false
                }
                ActorSlotState::CheckedOut => {
                    return Err(AnalyticsError::Corrupt(format!(
                        "actor record {actor} was not put back"
                    )));
                }
            };
            if open != slot.was_open {
                writes.push((open_session_key(&actor), open.then(Vec::new)));
            }
        }
        tree.transaction(|tree| {
            for (key, value) in &writes {
                match value {
                    Some(value) => tree.insert(key.as_slice(), value.as_slice())?,
                    None => tree.remove(key.as_slice())?,
                };
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        })
        .map_err(|error| match error {
            TransactionError::Storage(error) => AnalyticsError::Sled(error),
            TransactionError::Abort(()) => AnalyticsError::Corrupt("commit aborted".to_owned()),
        })
    }
}
