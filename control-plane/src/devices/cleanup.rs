//! `[devices]`: how long devices are kept. The `devices` job of
//! [`crate::housekeeping`] deactivates devices their app has not
//! refreshed for `stale_after` and deletes devices deactivated for
//! `delete_after` (see [`super::DeviceStore::cleanup`]).

use std::time::Duration;

use serde::Deserialize;

use crate::channels::email::humantime_duration;

/// `[devices]` in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceRetention {
    /// A device whose app has not registered (refreshed) it for this long
    /// is deactivated. 270 days by default: FCM treats tokens inactive that
    /// long as expired, and apps are expected to refresh monthly.
    #[serde(with = "humantime_duration")]
    pub stale_after: Duration,
    /// A deactivated device is deleted after this long (kept meanwhile so
    /// operators can see why it stopped receiving pushes).
    #[serde(with = "humantime_duration")]
    pub delete_after: Duration,
}

impl Default for DeviceRetention {
    fn default() -> Self {
        DeviceRetention {
            stale_after: Duration::from_secs(270 * 86_400),
            delete_after: Duration::from_secs(30 * 86_400),
        }
    }
}
