//! The background task that retires devices: once at start-up and then
//! every [`CLEANUP_EVERY`], it deactivates devices their app has not
//! refreshed for `stale_after` and deletes devices deactivated for
//! `delete_after` (see [`DeviceStore::cleanup`]). A failed pass is logged
//! and retried on the next one; it never stops the server.

use std::time::Duration;

use jiff::Timestamp;
use serde::Deserialize;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::DeviceStore;
use crate::channels::email::humantime_duration;

/// How often a pass runs: the ages involved are weeks.
pub const CLEANUP_EVERY: Duration = Duration::from_secs(6 * 3600);

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

/// Runs passes until `stop` is cancelled.
pub async fn run(devices: DeviceStore, retention: DeviceRetention, stop: CancellationToken) {
    let mut interval = tokio::time::interval(CLEANUP_EVERY);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let pass = devices
            .cleanup(
                Timestamp::now(),
                retention.stale_after,
                retention.delete_after,
            )
            .await;
        match pass {
            Ok(report) => {
                if report.deactivated + report.deleted > 0 {
                    tracing::info!(
                        deactivated = report.deactivated,
                        deleted = report.deleted,
                        "inactive devices cleaned up"
                    );
                }
            }
            Err(error) => tracing::warn!(%error, "device cleanup failed; retrying next pass"),
        }
    }
}
