//! [`Overlay`]: one pass's changes to the rollups, held in memory and
//! read through, then committed in one SQL transaction
//! ([`RollupTable::commit`]) together with the pass's cursor and the
//! list of the delivery facts it counted.
//!
//! Actor records ([`ActorState`]) are held decoded, so a pass decodes and
//! encodes each actor once however many of its events it folds; the
//! commit keeps the open-sessions index (`as`) in step with them.
//!
//! Reads are batched: [`Overlay::prefetch`] runs the pass's fold once on
//! a scratch overlay where every key not read yet reads as absent and is
//! noted, then reads the noted keys in a few `IN (…)` queries; a key the
//! scratch run could not foresee (one found through a record it read as
//! absent) is read when the real fold asks for it. Each stored value is
//! read at most once per overlay.
//!
//! The overlay notes the table's generation before reading anything, and
//! its commit applies only if no other commit came in between (else
//! [`AnalyticsError::Conflict`], nothing written), so reading under the
//! overlay sees exactly the state the pass started from plus its own
//! changes, in this process (where writers also take one lock) and
//! across processes alike.

use std::cell::RefCell;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::AnalyticsError;
use super::actor::ActorState;
use super::keys::{decode_counters, encode_counters};
use super::layout::{actor_key, open_session_key};
use crate::storage::{RollupTable, block_on};

/// How many times [`Overlay::prefetch`] runs the fold: the second run
/// finds the keys only reachable through records the first one loaded
/// (an anonymous id's user, that user's record).
const PREFETCH_ROUNDS: usize = 2;

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
    table: &'a RollupTable,
    /// The table's generation when the overlay began (see
    /// [`RollupTable::commit`]).
    generation: u64,
    /// Stored values read so far (`None`: no such key).
    read: RefCell<HashMap<Vec<u8>, Option<Vec<u8>>>>,
    /// While scouting ([`Overlay::prefetch`]): the keys asked for that
    /// were not read yet (they read as absent meanwhile).
    scouting: Option<RefCell<BTreeSet<Vec<u8>>>>,
    slots: BTreeMap<Vec<u8>, Slot>,
    actors: BTreeMap<String, ActorSlot>,
}

impl<'a> Overlay<'a> {
    /// An empty overlay over the table as it is now.
    pub fn begin(table: &'a RollupTable) -> Result<Self, AnalyticsError> {
        let generation = block_on(table.generation())?;
        Ok(Overlay {
            table,
            generation,
            read: RefCell::default(),
            scouting: None,
            slots: BTreeMap::new(),
            actors: BTreeMap::new(),
        })
    }

    /// The stored value of `key`, read once per overlay.
    fn stored(&self, key: &[u8]) -> Result<Option<Vec<u8>>, AnalyticsError> {
        if let Some(value) = self.read.borrow().get(key) {
            return Ok(value.clone());
        }
        if let Some(missing) = &self.scouting {
            missing.borrow_mut().insert(key.to_vec());
            return Ok(None);
        }
        let value = block_on(self.table.get(&[key.to_vec()]))?
            .pop()
            .map(|(_, value)| value);
        self.read.borrow_mut().insert(key.to_vec(), value.clone());
        Ok(value)
    }

    /// Reads those of `keys` not read yet, in batches.
    pub fn load(&self, keys: Vec<Vec<u8>>) -> Result<(), AnalyticsError> {
        let wanted: Vec<Vec<u8>> = {
            let read = self.read.borrow();
            keys.into_iter()
                .filter(|key| !read.contains_key(key))
                .collect()
        };
        let found = block_on(self.table.get(&wanted))?;
        let mut read = self.read.borrow_mut();
        for key in wanted {
            read.insert(key, None);
        }
        for (key, value) in found {
            read.insert(key, Some(value));
        }
        Ok(())
    }

    /// Reads, in batches, what `fold` will read (see the module doc):
    /// call it with the pass's fold before changing anything. The scratch
    /// runs' changes are dropped, and so are their errors: the real fold
    /// meets them again with the real values and reports them.
    pub fn prefetch<F>(&mut self, mut fold: F) -> Result<(), AnalyticsError>
    where
        F: FnMut(&mut Overlay<'a>) -> Result<(), AnalyticsError>,
    {
        for _ in 0..PREFETCH_ROUNDS {
            let mut scout = Overlay {
                table: self.table,
                generation: self.generation,
                read: RefCell::new(std::mem::take(self.read.get_mut())),
                scouting: Some(RefCell::default()),
                slots: BTreeMap::new(),
                actors: BTreeMap::new(),
            };
            let _ = fold(&mut scout);
            *self.read.get_mut() = scout.read.into_inner();
            let missing = scout.scouting.map(RefCell::into_inner).unwrap_or_default();
            if missing.is_empty() {
                break;
            }
            self.load(missing.into_iter().collect())?;
        }
        Ok(())
    }

    fn actor_slot(&mut self, actor: &str) -> Result<&mut ActorSlot, AnalyticsError> {
        if !self.actors.contains_key(actor) {
            let slot = match self.stored(&actor_key(actor))? {
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

    /// Adds 1 to the first counter at `key` and returns the new count: a
    /// number never handed out before (committed with the pass, so a pass
    /// that does not commit hands its numbers out again, unused).
    pub fn increment(&mut self, key: Vec<u8>) -> Result<i64, AnalyticsError> {
        self.add(key.clone(), &[(0, 1)])?;
        Ok(self.counters_mut(key)?.first().copied().unwrap_or(0))
    }

    fn counters_mut(&mut self, key: Vec<u8>) -> Result<&mut Vec<i64>, AnalyticsError> {
        let stored = match self.slots.contains_key(&key) {
            true => None,
            false => Some(
                self.stored(&key)?
                    .map(|bytes| decode_counters(&bytes))
                    .unwrap_or_default(),
            ),
        };
        let slot = match self.slots.entry(key) {
            Entry::Occupied(slot) => slot.into_mut(),
            Entry::Vacant(slot) => slot.insert(Slot::Counters(stored.unwrap_or_default())),
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
            None => self.stored(key),
        }
    }

    pub fn contains(&self, key: &[u8]) -> Result<bool, AnalyticsError> {
        match self.slots.get(key) {
            Some(Slot::Bytes(value)) => Ok(value.is_some()),
            Some(Slot::Counters(_)) => Ok(true),
            None => Ok(self.stored(key)?.is_some()),
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
    /// left out), in order. One range scan, whose values are kept as read.
    pub fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, AnalyticsError> {
        let mut keys: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
        let rows = block_on(self.table.scan_prefix(prefix))?;
        let mut read = self.read.borrow_mut();
        for (key, value) in rows {
            keys.insert(key.clone(), true);
            read.entry(key).or_insert(Some(value));
        }
        drop(read);
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

    /// Writes every change in one transaction; [`AnalyticsError::Conflict`]
    /// (nothing written) if another commit came after the overlay began.
    pub fn commit(self, counted_facts: &[i64]) -> Result<(), AnalyticsError> {
        let Overlay {
            table,
            generation,
            slots,
            actors,
            ..
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
        if block_on(table.commit(generation, writes, counted_facts))? {
            Ok(())
        } else {
            Err(AnalyticsError::Conflict)
        }
    }
}
