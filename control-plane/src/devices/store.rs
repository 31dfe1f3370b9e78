//! [`DeviceStore`]: devices in sled. Tree `devices` holds each record as
//! JSON under `user id \0 device id` (so a user's devices are one prefix
//! scan); tree `device_owners` maps a device id to the user holding it (so
//! a provider's "this token is gone" finds its record, and a token moves
//! when another user registers it).
//!
//! [`DeviceStore::erase_user`] (privacy) deletes every device of a user
//! with its owner entries.

use std::time::Duration;

use jiff::Timestamp;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use super::{Device, DeviceError, NewDevice, Platform, address_of, device_id};
use crate::channels::{ChannelKind, Recipient};

#[derive(Debug, Clone)]
pub struct DeviceStore {
    devices: sled::Tree,
    owners: sled::Tree,
}

/// What one [`DeviceStore::cleanup`] pass changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupReport {
    pub deactivated: usize,
    pub deleted: usize,
}

fn key(user_id: &str, device_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(user_id.len() + 1 + device_id.len());
    key.extend_from_slice(user_id.as_bytes());
    key.push(0);
    key.extend_from_slice(device_id.as_bytes());
    key
}

fn prefix(user_id: &str) -> Vec<u8> {
    key(user_id, "")
}

fn decode(key: &[u8], bytes: &[u8]) -> Result<Device, DeviceError> {
    serde_json::from_slice(bytes).map_err(|error| DeviceError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        message: error.to_string(),
    })
}

fn encode(device: &Device) -> Vec<u8> {
    serde_json::to_vec(device).expect("a device serialises")
}

type TxResult<T> = Result<T, ConflictableTransactionError<DeviceError>>;

fn tx_error(error: TransactionError<DeviceError>) -> DeviceError {
    match error {
        TransactionError::Abort(error) => error,
        TransactionError::Storage(error) => error.into(),
    }
}

fn tx_decode(key: &[u8], bytes: &[u8]) -> TxResult<Device> {
    decode(key, bytes).map_err(ConflictableTransactionError::Abort)
}

impl DeviceStore {
    pub fn open(db: &sled::Db) -> Result<Self, DeviceError> {
        Ok(DeviceStore {
            devices: db.open_tree("devices")?,
            owners: db.open_tree("device_owners")?,
        })
    }

    /// Registers (or refreshes) `new` for `user_id`: see the module doc
    /// for what happens to an address already known.
    pub fn register(
        &self,
        user_id: &str,
        new: &NewDevice,
        now: Timestamp,
    ) -> Result<Device, DeviceError> {
        if user_id.is_empty() || user_id.contains('\0') {
            return Err(DeviceError::Invalid(
                "the user id is empty or contains NUL".into(),
            ));
        }
        let address = new.validate()?;
        let id = device_id(new.platform, address);
        let device = (&self.devices, &self.owners)
            .transaction(|(devices, owners)| {
                if let Some(owner) = owners.get(id.as_bytes())? {
                    let owner = String::from_utf8_lossy(&owner).into_owned();
                    if owner != user_id {
                        devices.remove(key(&owner, &id))?;
                    }
                }
                let record_key = key(user_id, &id);
                let device = match devices.get(&record_key)? {
                    Some(bytes) => {
                        let mut device = tx_decode(&record_key, &bytes)?;
                        if new.label.is_some() {
                            device.label.clone_from(&new.label);
                        }
                        // The browser may rotate a subscription's keys.
                        device.subscription.clone_from(&new.subscription);
                        device.active = true;
                        device.deactivated_reason = None;
                        device.deactivated_at = None;
                        device.last_seen_at = now;
                        device
                    }
                    None => Device {
                        id: id.clone(),
                        user_id: user_id.to_owned(),
                        platform: new.platform,
                        token: new.token.clone(),
                        subscription: new.subscription.clone(),
                        label: new.label.clone(),
                        active: true,
                        deactivated_reason: None,
                        deactivated_at: None,
                        created_at: now,
                        last_seen_at: now,
                    },
                };
                devices.insert(record_key, encode(&device))?;
                owners.insert(id.as_bytes(), user_id.as_bytes())?;
                Ok(device)
            })
            .map_err(tx_error)?;
        self.devices.flush()?;
        Ok(device)
    }

    /// The user's devices, active and not, ordered by id.
    pub fn list(&self, user_id: &str) -> Result<Vec<Device>, DeviceError> {
        self.devices
            .scan_prefix(prefix(user_id))
            .map(|entry| {
                let (key, value) = entry?;
                decode(&key, &value)
            })
            .collect()
    }

    pub fn get(&self, user_id: &str, device_id: &str) -> Result<Option<Device>, DeviceError> {
        let record_key = key(user_id, device_id);
        self.devices
            .get(&record_key)?
            .map(|bytes| decode(&record_key, &bytes))
            .transpose()
    }

    /// The user's active devices on `platform`: the ones planning sends to.
    pub fn active(&self, user_id: &str, platform: Platform) -> Result<Vec<Device>, DeviceError> {
        Ok(self
            .list(user_id)?
            .into_iter()
            .filter(|device| device.active && device.platform == platform)
            .collect())
    }

    /// Deletes the user's device; `false` when there was none.
    pub fn delete(&self, user_id: &str, device_id: &str) -> Result<bool, DeviceError> {
        let removed = (&self.devices, &self.owners)
            .transaction(|(devices, owners)| remove(devices, owners, user_id, device_id))
            .map_err(tx_error)?;
        if removed {
            self.devices.flush()?;
        }
        Ok(removed)
    }

    /// Deletes every device of the user; returns how many. Flushed.
    pub fn erase_user(&self, user_id: &str) -> Result<usize, DeviceError> {
        let mut removed = 0;
        for device in self.list(user_id)? {
            let gone = (&self.devices, &self.owners)
                .transaction(|(devices, owners)| remove(devices, owners, user_id, &device.id))
                .map_err(tx_error)?;
            removed += usize::from(gone);
        }
        if removed > 0 {
            self.devices.flush()?;
        }
        Ok(removed)
    }

    /// Switches the user's device on or off; `None` when there is none.
    /// `reason` is kept on a deactivated device.
    pub fn set_active(
        &self,
        user_id: &str,
        device_id: &str,
        active: bool,
        reason: &str,
        now: Timestamp,
    ) -> Result<Option<Device>, DeviceError> {
        let record_key = key(user_id, device_id);
        let changed = self
            .devices
            .transaction(|devices| {
                let Some(bytes) = devices.get(&record_key)? else {
                    return Ok(None);
                };
                let mut device = tx_decode(&record_key, &bytes)?;
                if device.active != active {
                    device.active = active;
                    if active {
                        device.deactivated_reason = None;
                        device.deactivated_at = None;
                        device.last_seen_at = now;
                    } else {
                        device.deactivated_reason = Some(reason.to_owned());
                        device.deactivated_at = Some(now);
                    }
                    devices.insert(record_key.as_slice(), encode(&device))?;
                }
                Ok(Some(device))
            })
            .map_err(tx_error)?;
        self.devices.flush()?;
        Ok(changed)
    }

    /// Deactivates the device a provider reported as invalid (the
    /// dispatcher's `InvalidRecipient` hook). `None` when the recipient is
    /// not a registered device (e.g. it was deleted meanwhile).
    pub fn deactivate_address(
        &self,
        channel: ChannelKind,
        recipient: &Recipient,
        reason: &str,
        now: Timestamp,
    ) -> Result<Option<Device>, DeviceError> {
        let Some((platform, address)) = address_of(channel, recipient) else {
            return Ok(None);
        };
        let id = device_id(platform, address);
        let Some(owner) = self.owners.get(id.as_bytes())? else {
            return Ok(None);
        };
        let owner = String::from_utf8_lossy(&owner).into_owned();
        self.set_active(&owner, &id, false, reason, now)
    }

    /// Deactivates devices not seen for `stale_after` and deletes devices
    /// deactivated for `delete_after`.
    pub fn cleanup(
        &self,
        now: Timestamp,
        stale_after: Duration,
        delete_after: Duration,
    ) -> Result<CleanupReport, DeviceError> {
        let mut report = CleanupReport::default();
        let older_than = |at: Timestamp, age: Duration| {
            jiff::SignedDuration::try_from(age)
                .ok()
                .and_then(|age| now.checked_sub(age).ok())
                .is_some_and(|limit| at < limit)
        };
        for entry in self.devices.iter() {
            let (record_key, value) = entry?;
            let device = decode(&record_key, &value)?;
            if !device.active {
                let since = device.deactivated_at.unwrap_or(device.last_seen_at);
                if older_than(since, delete_after) && self.delete(&device.user_id, &device.id)? {
                    report.deleted += 1;
                }
            } else if older_than(device.last_seen_at, stale_after)
                && self
                    .set_active(&device.user_id, &device.id, false, "inactive", now)?
                    .is_some()
            {
                report.deactivated += 1;
            }
        }
        Ok(report)
    }
}

fn remove(
    devices: &TransactionalTree,
    owners: &TransactionalTree,
    user_id: &str,
    device_id: &str,
) -> TxResult<bool> {
    let removed = devices.remove(key(user_id, device_id))?.is_some();
    if owners
        .get(device_id.as_bytes())?
        .is_some_and(|owner| owner.as_ref() == user_id.as_bytes())
    {
        owners.remove(device_id.as_bytes())?;
    }
    Ok(removed)
}
