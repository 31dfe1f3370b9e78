//! Users' push devices in SQL: table `devices` (migration 0002), one row
//! per address, keyed by the device id the caller derives from platform
//! and address (see [`crate::devices::device_id`]).
//!
//! # Promises
//!
//! * **An address belongs to one user**: the primary key is the device
//!   id, so [`DeviceTable::register`] of an address another user holds
//!   moves the row to the new user (as a new device: their label, created
//!   now), in the same statement that writes it.
//! * **At most `max_per_user` devices per user and platform** after a
//!   registration: in the registration's transaction, the user's other
//!   devices on that platform beyond the limit are deleted, deactivated
//!   ones first, then the least recently seen (see the README's
//!   `NUDGE_CP_MAX_DEVICES_PER_USER`). Registrations of one user are
//!   serialized (SQLite: one writer; PostgreSQL: a transaction-scoped
//!   advisory lock on the user), so concurrent ones cannot overshoot.
//! * Every write has committed (durably) when it returns.
//! * Cleanup deletes and deactivates in chunks, so registrations wait at
//!   most one chunk.

use jiff::Timestamp;

use super::StorageError;
use super::database::{Database, Engine, begin_write, with_pool};
use crate::devices::{Device, Platform, Subscription, SubscriptionKeys};

/// The columns of a device row, in [`DeviceRow`]'s order (a macro, so
/// queries stay `&'static str` with `concat!`).
macro_rules! columns {
    () => {
        "id, user_id, platform, address, p256dh, auth, label, active, \
         deactivated_reason, deactivated_at, created_at, last_seen_at"
    };
}

/// One row of `devices`, as both engines decode it.
type DeviceRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    bool,
    Option<String>,
    Option<i64>,
    i64,
    i64,
);

/// Rows one cleanup statement changes.
const CLEANUP_CHUNK: i64 = 1000;

/// The first key of the advisory locks that serialize one user's
/// registrations on PostgreSQL ("nudg"); the second is the user id's hash.
const REGISTER_LOCK_SPACE: i32 = 0x6e75_6467;

/// The `devices` table. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DeviceTable {
    database: Database,
}

/// What [`DeviceTable::register`] stored, and which of the user's other
/// devices it deleted to stay within the limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    pub device: Device,
    /// The user did not hold this address before (new, or moved from
    /// another user): decided in the registering transaction.
    pub created: bool,
    pub evicted: Vec<String>,
}

impl DeviceTable {
    pub(super) fn new(database: Database) -> Self {
        DeviceTable { database }
    }

    /// Writes `device` (active, seen at its `last_seen_at`). When its id is
    /// stored already for the same user, the row is refreshed instead:
    /// `created_at` stays, the label stays unless `device` has one, the
    /// Web Push keys are replaced, and it is active again. Then keeps the
    /// user's devices on the platform within `max_per_user` (see the
    /// module doc).
    pub async fn register(
        &self,
        device: &Device,
        max_per_user: usize,
    ) -> Result<Registered, StorageError> {
        let _timer = self.database.metrics().time("devices_register");
        let (address, p256dh, auth) = address_columns(device)?;
        let keep = max_per_user.max(1) - 1;
        const UPSERT: &str = concat!(
            "INSERT INTO devices (",
            columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL, $9, $10) \
             ON CONFLICT (id) DO UPDATE SET \
               label = CASE WHEN devices.user_id = excluded.user_id \
                 THEN COALESCE(excluded.label, devices.label) ELSE excluded.label END, \
               created_at = CASE WHEN devices.user_id = excluded.user_id \
                 THEN devices.created_at ELSE excluded.created_at END, \
               user_id = excluded.user_id, \
               p256dh = excluded.p256dh, \
               auth = excluded.auth, \
               active = excluded.active, \
               deactivated_reason = NULL, \
               deactivated_at = NULL, \
               last_seen_at = excluded.last_seen_at \
             RETURNING ",
            columns!()
        );
        // Whose the address was, read in the transaction (and on
        // PostgreSQL with the row locked) so concurrent registrations of
        // one address cannot both call themselves its creator.
        let holder_sql = if self.database.engine() == Engine::Postgres {
            "SELECT user_id FROM devices WHERE id = $1 FOR UPDATE"
        } else {
            "SELECT user_id FROM devices WHERE id = $1"
        };
        let (row, created, evicted) = with_pool!(write self.database, pool, engine => {
            let mut tx = begin_write(self.database.metrics(), pool, engine).await?;
            if engine == Engine::Postgres {
                sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                    .bind(REGISTER_LOCK_SPACE)
                    .bind(device.user_id.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            let holder: Option<String> = sqlx::query_scalar(holder_sql)
                .bind(device.id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            let created = holder.as_deref() != Some(device.user_id.as_str());
            let row: DeviceRow = sqlx::query_as(UPSERT)
                .bind(device.id.as_str())
                .bind(device.user_id.as_str())
                .bind(device.platform.as_str())
                .bind(address)
                .bind(p256dh)
                .bind(auth)
                .bind(device.label.as_deref())
                .bind(true)
                .bind(device.created_at.as_millisecond())
                .bind(device.last_seen_at.as_millisecond())
                .fetch_one(&mut *tx)
                .await?;
            // The devices beyond the limit: the user's others on the
            // platform after the first `keep` (active before deactivated,
            // then most recently seen first). Few rows: the limit holds.
            let others: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM devices WHERE user_id = $1 AND platform = $2 AND id <> $3 \
                 ORDER BY active DESC, last_seen_at DESC, id",
            )
            .bind(device.user_id.as_str())
            .bind(device.platform.as_str())
            .bind(device.id.as_str())
            .fetch_all(&mut *tx)
            .await?;
            let evicted: Vec<String> = others.into_iter().skip(keep).collect();
            for id in &evicted {
                sqlx::query("DELETE FROM devices WHERE id = $1")
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            (row, created, evicted)
        });
        Ok(Registered {
            device: from_row(row)?,
            created,
            evicted,
        })
    }

    /// The user's devices, active and not, ordered by id.
    pub async fn list(&self, user_id: &str) -> Result<Vec<Device>, StorageError> {
        const SQL: &str = concat!(
            "SELECT ",
            columns!(),
            " FROM devices WHERE user_id = $1 ORDER BY id"
        );
        let rows: Vec<DeviceRow> = with_pool!(self.database, pool => {
            sqlx::query_as(SQL).bind(user_id).fetch_all(pool).await?
        });
        rows.into_iter().map(from_row).collect()
    }

    /// The user's device `device_id`, if they hold it.
    pub async fn get(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Option<Device>, StorageError> {
        const SQL: &str = concat!(
            "SELECT ",
            columns!(),
            " FROM devices WHERE user_id = $1 AND id = $2"
        );
        let row: Option<DeviceRow> = with_pool!(self.database, pool => {
            sqlx::query_as(SQL)
                .bind(user_id)
                .bind(device_id)
                .fetch_optional(pool)
                .await?
        });
        row.map(from_row).transpose()
    }

    /// The user's active devices on `platform`, ordered by id.
    pub async fn active(
        &self,
        user_id: &str,
        platform: Platform,
    ) -> Result<Vec<Device>, StorageError> {
        let _timer = self.database.metrics().time("devices_active");
        const SQL: &str = concat!(
            "SELECT ",
            columns!(),
            " FROM devices WHERE user_id = $1 AND platform = $2 AND active ORDER BY id"
        );
        let rows: Vec<DeviceRow> = with_pool!(self.database, pool => {
            sqlx::query_as(SQL)
                .bind(user_id)
                .bind(platform.as_str())
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(from_row).collect()
    }

    /// Who holds device `device_id`, if anyone.
    pub async fn owner(&self, device_id: &str) -> Result<Option<String>, StorageError> {
        Ok(with_pool!(self.database, pool => {
            sqlx::query_scalar("SELECT user_id FROM devices WHERE id = $1")
                .bind(device_id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Deletes the user's device; `false` when they hold none of that id.
    pub async fn delete(&self, user_id: &str, device_id: &str) -> Result<bool, StorageError> {
        let removed = with_pool!(write self.database, pool => {
            sqlx::query("DELETE FROM devices WHERE user_id = $1 AND id = $2")
                .bind(user_id)
                .bind(device_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(removed > 0)
    }

    /// Deletes every device of the user; how many.
    pub async fn erase_user(&self, user_id: &str) -> Result<u64, StorageError> {
        let _timer = self.database.metrics().time("devices_erase_user");
        Ok(with_pool!(write self.database, pool => {
            sqlx::query("DELETE FROM devices WHERE user_id = $1")
                .bind(user_id)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }

    /// Switches the user's device on (seen at `now`) or off (with `reason`
    /// and `now`); a device already in that state is left as it is.
    /// Returns the device as stored after the call, `None` when the user
    /// holds none of that id.
    pub async fn set_active(
        &self,
        user_id: &str,
        device_id: &str,
        active: bool,
        reason: &str,
        now: Timestamp,
    ) -> Result<Option<Device>, StorageError> {
        let now = now.as_millisecond();
        with_pool!(write self.database, pool => {
            let query = if active {
                sqlx::query(
                    "UPDATE devices SET active = $3, deactivated_reason = NULL, deactivated_at = NULL, \
                     last_seen_at = $4 WHERE user_id = $1 AND id = $2 AND NOT active",
                )
                .bind(user_id)
                .bind(device_id)
                .bind(true)
                .bind(now)
            } else {
                sqlx::query(
                    "UPDATE devices SET active = $3, deactivated_reason = $5, deactivated_at = $4 \
                     WHERE user_id = $1 AND id = $2 AND active",
                )
                .bind(user_id)
                .bind(device_id)
                .bind(false)
                .bind(now)
                .bind(reason)
            };
            query.execute(pool).await?;
        });
        self.get(user_id, device_id).await
    }

    /// Deletes devices deactivated before `cutoff`; how many.
    pub async fn delete_deactivated_before(&self, cutoff: Timestamp) -> Result<u64, StorageError> {
        let _timer = self.database.metrics().time("devices_cleanup");
        let mut removed = 0;
        loop {
            let chunk = with_pool!(write self.database, pool => {
                sqlx::query(
                    "DELETE FROM devices WHERE id IN (SELECT id FROM devices \
                     WHERE NOT active AND deactivated_at < $1 LIMIT $2)",
                )
                .bind(cutoff.as_millisecond())
                .bind(CLEANUP_CHUNK)
                .execute(pool)
                .await?
                .rows_affected()
            });
            removed += chunk;
            if chunk == 0 {
                return Ok(removed);
            }
        }
    }

    /// Deactivates active devices last seen before `cutoff`, with `reason`
    /// at `now`; how many.
    pub async fn deactivate_unseen_since(
        &self,
        cutoff: Timestamp,
        reason: &str,
        now: Timestamp,
    ) -> Result<u64, StorageError> {
        let _timer = self.database.metrics().time("devices_cleanup");
        let mut changed = 0;
        loop {
            let chunk = with_pool!(write self.database, pool => {
                sqlx::query(
                    "UPDATE devices SET active = $3, deactivated_reason = $4, deactivated_at = $5 \
                     WHERE id IN (SELECT id FROM devices WHERE active AND last_seen_at < $1 LIMIT $2)",
                )
                .bind(cutoff.as_millisecond())
                .bind(CLEANUP_CHUNK)
                .bind(false)
                .bind(reason)
                .bind(now.as_millisecond())
                .execute(pool)
                .await?
                .rows_affected()
            });
            changed += chunk;
            if chunk == 0 {
                return Ok(changed);
            }
        }
    }
}

/// The `address`, `p256dh` and `auth` columns of `device`.
fn address_columns(device: &Device) -> Result<(&str, Option<&str>, Option<&str>), StorageError> {
    match (device.platform, &device.token, &device.subscription) {
        (Platform::Apns | Platform::Fcm, Some(token), _) => Ok((token, None, None)),
        (Platform::WebPush, _, Some(subscription)) => Ok((
            &subscription.endpoint,
            Some(&subscription.keys.p256dh),
            Some(&subscription.keys.auth),
        )),
        _ => Err(StorageError::Corrupt(format!(
            "device {} has no address of its platform",
            device.id
        ))),
    }
}

fn from_row(row: DeviceRow) -> Result<Device, StorageError> {
    let (
        id,
        user_id,
        platform,
        address,
        p256dh,
        auth,
        label,
        active,
        deactivated_reason,
        deactivated_at,
        created_at,
        last_seen_at,
    ) = row;
    let platform = match platform.as_str() {
        "apns" => Platform::Apns,
        "fcm" => Platform::Fcm,
        "web_push" => Platform::WebPush,
        other => {
            return Err(StorageError::Corrupt(format!(
                "device {id}: unknown platform {other:?}"
            )));
        }
    };
    let (token, subscription) = match platform {
        Platform::Apns | Platform::Fcm => (Some(address), None),
        Platform::WebPush => (
            None,
            Some(Subscription {
                endpoint: address,
                keys: SubscriptionKeys {
                    p256dh: p256dh.unwrap_or_default(),
                    auth: auth.unwrap_or_default(),
                },
            }),
        ),
    };
    let time = |millis: i64| {
        Timestamp::from_millisecond(millis)
            .map_err(|error| StorageError::Corrupt(format!("device {id}: time {millis}: {error}")))
    };
    Ok(Device {
        platform,
        token,
        subscription,
        label,
        active,
        deactivated_reason,
        deactivated_at: deactivated_at.map(time).transpose()?,
        created_at: time(created_at)?,
        last_seen_at: time(last_seen_at)?,
        user_id,
        id,
    })
}
