//! [`DeviceStore`]: what registering, listing, switching and retiring
//! devices means, over the storage boundary's `devices` table
//! ([`DeviceTable`]), which keeps the record of each address.
//!
//! # Promises (besides those of [`super`])
//!
//! * **At most [`DeviceStore::max_per_user`] devices per user and
//!   platform.** A registration over the limit succeeds and deletes the
//!   user's device on that platform that is least likely to be reached:
//!   a deactivated one first, else the one seen least recently. Refusing
//!   instead would strand a real user whose old phones' tokens died
//!   silently (they stay active until a send fails or cleanup runs), and
//!   an app cannot fix that; evicting bounds what one notification fans
//!   out to (issue 15: thousands of Web Push endpoints per user) just as
//!   well. Every eviction is logged.
//! * [`DeviceStore::erase_user`] (privacy) deletes every device of a user.
//! * A user id with a NUL character holds no device (no entrance lets one
//!   in, and PostgreSQL text cannot hold it): reads find nothing,
//!   registrations are refused as invalid.

use std::time::Duration;

use jiff::Timestamp;

use super::{Device, DeviceError, NewDevice, Platform, address_of, device_id};
use crate::channels::{ChannelKind, Recipient};
use crate::storage::{DeviceTable, StorageError};

/// Devices per user and platform unless configured
/// (`NUDGE_CP_MAX_DEVICES_PER_USER`): more phones, tablets and browsers
/// than one person uses, far fewer than an abuser would want.
pub const DEFAULT_MAX_DEVICES_PER_USER: usize = 20;

/// Users' devices. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DeviceStore {
    table: DeviceTable,
    /// Devices one user may hold on one platform (see the module doc).
    max_per_user: usize,
}

/// What one [`DeviceStore::cleanup`] pass changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupReport {
    pub deactivated: usize,
    pub deleted: usize,
}

impl From<StorageError> for DeviceError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::Corrupt(message) => DeviceError::Corrupt {
                key: "devices".to_owned(),
                message,
            },
            other => DeviceError::Storage(other.to_string()),
        }
    }
}

impl DeviceStore {
    /// The store over `table`, with [`DEFAULT_MAX_DEVICES_PER_USER`].
    pub fn new(table: DeviceTable) -> Self {
        DeviceStore {
            table,
            max_per_user: DEFAULT_MAX_DEVICES_PER_USER,
        }
    }

    /// Keeps at most `max` devices per user and platform (at least one).
    pub fn set_max_per_user(&mut self, max: usize) {
        self.max_per_user = max.max(1);
    }

    /// Devices one user may hold on one platform.
    pub fn max_per_user(&self) -> usize {
        self.max_per_user
    }

    /// Registers (or refreshes) `new` for `user_id`: see [`super`] for
    /// what happens to an address already known. Keeps the user within
    /// [`Self::max_per_user`] devices on the platform by deleting the
    /// least reachable others: a deactivated one first, else the one
    /// seen least recently (why evicting and not refusing: this module's
    /// doc).
    pub async fn register(
        &self,
        user_id: &str,
        new: &NewDevice,
        now: Timestamp,
    ) -> Result<Device, DeviceError> {
        Ok(self.register_telling_new(user_id, new, now).await?.0)
    }

    /// [`Self::register`], also answering whether the user did not hold
    /// the address before (HTTP 201 / gRPC `created`), as decided in the
    /// registering transaction.
    pub async fn register_telling_new(
        &self,
        user_id: &str,
        new: &NewDevice,
        now: Timestamp,
    ) -> Result<(Device, bool), DeviceError> {
        if user_id.is_empty() || user_id.contains('\0') {
            return Err(DeviceError::Invalid(
                "the user id is empty or contains NUL".into(),
            ));
        }
        let address = new.validate()?;
        // The record of a new address; the table keeps `created_at` and
        // the label of one the user already holds.
        let device = Device {
            id: device_id(new.platform, address),
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
        };
        let registered = self.table.register(&device, self.max_per_user).await?;
        for evicted in &registered.evicted {
            tracing::info!(
                device = %evicted,
                platform = new.platform.as_str(),
                limit = self.max_per_user,
                "device deleted: its user registered one more than the limit allows"
            );
        }
        Ok((registered.device, registered.created))
    }

    /// The user's devices, active and not, ordered by id.
    pub async fn list(&self, user_id: &str) -> Result<Vec<Device>, DeviceError> {
        if user_id.contains('\0') {
            return Ok(Vec::new());
        }
        Ok(self.table.list(user_id).await?)
    }

    pub async fn get(&self, user_id: &str, device_id: &str) -> Result<Option<Device>, DeviceError> {
        if has_nul(&[user_id, device_id]) {
            return Ok(None);
        }
        Ok(self.table.get(user_id, device_id).await?)
    }

    /// The user's active devices on `platform`: the ones planning sends to.
    pub async fn active(
        &self,
        user_id: &str,
        platform: Platform,
    ) -> Result<Vec<Device>, DeviceError> {
        if user_id.contains('\0') {
            return Ok(Vec::new());
        }
        Ok(self.table.active(user_id, platform).await?)
    }

    /// Deletes the user's device; `false` when there was none.
    pub async fn delete(&self, user_id: &str, device_id: &str) -> Result<bool, DeviceError> {
        if has_nul(&[user_id, device_id]) {
            return Ok(false);
        }
        Ok(self.table.delete(user_id, device_id).await?)
    }

    /// Deletes every device of the user; returns how many.
    pub async fn erase_user(&self, user_id: &str) -> Result<usize, DeviceError> {
        if user_id.contains('\0') {
            return Ok(0);
        }
        let removed = self.table.erase_user(user_id).await?;
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }

    /// Switches the user's device on or off; `None` when there is none.
    /// `reason` is kept on a deactivated device.
    pub async fn set_active(
        &self,
        user_id: &str,
        device_id: &str,
        active: bool,
        reason: &str,
        now: Timestamp,
    ) -> Result<Option<Device>, DeviceError> {
        if has_nul(&[user_id, device_id]) {
            return Ok(None);
        }
        // Reasons come from operators and providers' answers: text a
        // database column can hold.
        let reason = reason.replace('\0', "\u{fffd}");
        Ok(self
            .table
            .set_active(user_id, device_id, active, &reason, now)
            .await?)
    }

    /// Deactivates the device a provider reported as invalid (the
    /// dispatcher's `InvalidRecipient` hook). `None` when the recipient is
    /// not a registered device (e.g. it was deleted meanwhile).
    pub async fn deactivate_address(
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
        let Some(owner) = self.table.owner(&id).await? else {
            return Ok(None);
        };
        self.set_active(&owner, &id, false, reason, now).await
    }

    /// Deletes devices deactivated for `delete_after`, then deactivates
    /// devices not seen for `stale_after` (reason `inactive`), as of `now`.
    pub async fn cleanup(
        &self,
        now: Timestamp,
        stale_after: Duration,
        delete_after: Duration,
    ) -> Result<CleanupReport, DeviceError> {
        // An age beyond the calendar has no cutoff: nothing is that old.
        let cutoff = |age: Duration| {
            jiff::SignedDuration::try_from(age)
                .ok()
                .and_then(|age| now.checked_sub(age).ok())
        };
        let mut report = CleanupReport::default();
        if let Some(cutoff) = cutoff(delete_after) {
            let deleted = self.table.delete_deactivated_before(cutoff).await?;
            report.deleted = usize::try_from(deleted).unwrap_or(usize::MAX);
        }
        if let Some(cutoff) = cutoff(stale_after) {
            let deactivated = self
                .table
                .deactivate_unseen_since(cutoff, "inactive", now)
                .await?;
            report.deactivated = usize::try_from(deactivated).unwrap_or(usize::MAX);
        }
        Ok(report)
    }
}

fn has_nul(ids: &[&str]) -> bool {
    ids.iter().any(|id| id.contains('\0'))
}
