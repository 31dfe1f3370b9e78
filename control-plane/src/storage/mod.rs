//! The storage boundary: every table and every query of the control plane's
//! SQL database lives under this module, and nothing outside it names a
//! database driver. Two engines, one schema:
//!
//! * **SQLite**, embedded, the default: the file `nudge.sqlite3` under
//!   `NUDGE_CP_DATA_DIR` (or `NUDGE_CP_DATABASE_URL=sqlite://PATH`);
//! * **PostgreSQL** for production: `NUDGE_CP_DATABASE_URL=postgres://…`.
//!
//! [`Stores`] is opened once in [`crate::run`] and handed to everything
//! that reads or writes data, so there is one pool, one set of metrics and
//! one place that closes them. Errors ([`StorageError`]) say what failed,
//! never which driver.
//!
//! # What is where
//!
//! The events, the dedupe window, profiles and erasure tombstones
//! ([`EventStore`]); notifications and their idempotency keys
//! ([`NotificationStore`]); the delivery queue and the delivery facts
//! ([`DeliveryTable`]); users' preferences ([`PreferenceTable`]) and push
//! devices ([`DeviceTable`]); the inbox, its counts and change log
//! ([`InboxTable`]); the engine's feed cursor ([`CursorTable`]), the items
//! held for digests ([`DigestTable`]) and delayed rule triggers with their
//! finished markers ([`PendingTable`]); the catalog's API-defined types and
//! rules ([`CatalogTable`]); the analytics rollups ([`RollupTable`]); who
//! holds which share of the work among replicas ([`LeaseTable`]); the ids
//! of provider callbacks already taken ([`CallbackIdTable`]); topic
//! subscriptions ([`TopicTable`]) and broadcasts with their progress
//! ([`BroadcastTable`]).
//! Nothing is kept beside the database: a data dir holds the SQLite file
//! (embedded) or nothing (PostgreSQL). A data dir of an earlier, sled-based
//! build is refused, not imported (see [`StorageError::OldLayout`]).

mod audiences;
mod broadcasts;
mod callbacks;
mod catalog;
mod cursors;
pub(crate) mod database;
mod deliveries;
mod devices;
mod digests;
mod events;
mod inbox;
mod leases;
mod location;
mod metrics;
mod migrate;
mod notifications;
mod parked;
mod partitions;
mod payload;
mod pending;
mod preferences;
mod rollups;
mod sql_text;
mod throttles;
mod tombstones;
mod topics;
mod wakeups;

use std::future::Future;
use std::path::Path;

use jiff::Timestamp;

pub use broadcasts::{BroadcastTable, Cancelled, PageDone};
pub use callbacks::CallbackIdTable;
pub use catalog::{CatalogKind, CatalogTable, StoredCatalog};
pub use cursors::CursorTable;
pub use database::{Database, DatabaseSettings, Engine};
pub use deliveries::{Change, DeliveryTable, Edit};
pub use devices::{DeviceTable, Registered};
pub use digests::DigestTable;
pub use events::{EventStore, FeedPage};
pub use inbox::{InboxNotice, InboxTable, ItemRange, LogBounds, MAX_SQL_TYPES, ScanWindow};
pub use leases::{LeaseTable, Singleton};
pub use location::{DatabaseLocation, SQLITE_FILE};
pub use metrics::StorageMetrics;
pub use migrate::latest_version as latest_schema_version;
pub use notifications::NotificationStore;
pub use parked::{ParkedEvent, ParkedPage};
pub use pending::{Finish, PendingTable};
pub use preferences::{PreferenceTable, StoredPreferences};
pub use rollups::{RollupRow, RollupTable};
pub use topics::{Subscribed, TopicTable};
pub use wakeups::Listening;

/// Why a storage call failed. Every variant but [`StorageError::Connect`],
/// [`StorageError::InUse`], [`StorageError::Schema`] and
/// [`StorageError::OldLayout`] (start-up only) is
/// worth retrying later: the data the caller sent was fine, the storage
/// was not.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open the database at {location} (NUDGE_CP_DATABASE_URL): {reason}")]
    Connect { location: String, reason: String },
    #[error(
        "the database at {location} is in use by another process: the embedded SQLite database serves one control plane; run replicas on PostgreSQL (NUDGE_CP_DATABASE_URL)"
    )]
    InUse { location: String },
    #[error("database schema: {0}")]
    Schema(String),
    #[error(
        "NUDGE_CP_DATA_DIR {data_dir} holds only the sled files of an earlier build; its events are not imported (nothing with that layout was released): point NUDGE_CP_DATA_DIR at an empty directory, or move the old one away"
    )]
    OldLayout { data_dir: String },
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("could not encode a record: {0}")]
    Encode(#[from] serde_json::Error),
}

impl From<sqlx::Error> for StorageError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                StorageError::Corrupt(error.to_string())
            }
            other => StorageError::Unavailable(other.to_string()),
        }
    }
}

/// Every store of the control plane over one open database. Cheap to
/// clone; clones share the pool.
#[derive(Clone)]
pub struct Stores {
    pub database: Database,
    pub events: EventStore,
    pub notifications: NotificationStore,
    /// The delivery queue over its table, with the dispatcher's wake-ups:
    /// one for the process, so a wake-up from any caller reaches it.
    pub deliveries: crate::delivery::DeliveryQueue,
    /// Users' preferences (table `preferences`).
    pub preferences: crate::preferences::PreferenceStore,
    /// Users' push devices (table `devices`), with the per-user limit
    /// [`Stores::open`] sets to its default; `run` sets the configured one
    /// before anything takes a clone.
    pub devices: crate::devices::DeviceStore,
    /// Users' inboxes (tables `inbox_*`) with the live hub: one for the
    /// process, so what the in-app channel adds reaches every stream that
    /// HTTP serves.
    pub inbox: crate::inbox::InboxStore,
    /// Named positions in the event feed (table `cursors`): the engine's.
    pub cursors: CursorTable,
    /// Notifications held for hourly, daily and weekly digests (table
    /// `digest_items`).
    pub digests: crate::digest::DigestStore,
    /// Delayed rule triggers and their finished markers (table
    /// `pending_triggers`).
    pub pending: crate::rules::PendingTriggers,
    /// The types and rules defined through the management API (table
    /// `catalog_definitions`), for the one [`crate::catalog::Catalog`].
    pub catalog: CatalogTable,
    /// The analytics rollups (table `analytics_rollups`).
    pub rollups: RollupTable,
    /// Who holds what among the replicas on this database (table
    /// `leases`): feed partitions, singleton tasks, heartbeats.
    pub leases: LeaseTable,
    /// The message ids of provider callbacks already taken (table
    /// `callback_ids`): replays and resends are recognised by them.
    pub callback_ids: CallbackIdTable,
    /// Who follows which topic (table `topic_subscriptions`).
    pub topics: TopicTable,
    /// Broadcasts and their fan-out progress (table `broadcasts`).
    pub broadcasts: BroadcastTable,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl Stores {
    /// Opens the database `settings` name (migrating it); `data_dir` is
    /// the program's data dir, checked for an earlier build's layout.
    pub async fn open(
        settings: &DatabaseSettings,
        data_dir: &Path,
        metrics: StorageMetrics,
    ) -> Result<Stores, StorageError> {
        refuse_sled_only_data_dir(settings, data_dir)?;
        let database = Database::open(settings, metrics).await?;
        let events = EventStore::new(database.clone());
        // Rows of this week land in a partition of their own from the
        // first ingest (PostgreSQL); housekeeping keeps the next ones
        // made. Failing here only leaves rows in the default partition.
        if let Err(error) = events.ensure_partitions(Timestamp::now()).await {
            tracing::warn!(%error, "could not make the event partitions of the coming weeks");
        }
        let notifications = NotificationStore::new(database.clone());
        let deliveries = crate::delivery::DeliveryQueue::new(DeliveryTable::new(database.clone()));
        let preferences =
            crate::preferences::PreferenceStore::new(PreferenceTable::new(database.clone()));
        let devices = crate::devices::DeviceStore::new(DeviceTable::new(database.clone()));
        let inbox = crate::inbox::InboxStore::new(InboxTable::new(database.clone()));
        let cursors = CursorTable::new(database.clone());
        let digests = crate::digest::DigestStore::new(DigestTable::new(database.clone()));
        let pending = crate::rules::PendingTriggers::new(PendingTable::new(database.clone()));
        let catalog = CatalogTable::new(database.clone());
        let rollups = RollupTable::new(database.clone());
        let leases = LeaseTable::new(database.clone());
        leases.clear_if_alone().await?;
        let callback_ids = CallbackIdTable::new(database.clone());
        let topics = TopicTable::new(database.clone());
        let broadcasts = BroadcastTable::new(database.clone());
        Ok(Stores {
            database,
            events,
            notifications,
            deliveries,
            preferences,
            devices,
            inbox,
            cursors,
            digests,
            pending,
            catalog,
            rollups,
            leases,
            callback_ids,
            topics,
            broadcasts,
        })
    }

    /// Embedded storage in `dir` with metrics of its own:
    /// for tests, benchmarks and tools.
    pub async fn open_embedded(dir: &Path) -> Result<Stores, StorageError> {
        let settings = DatabaseSettings::sqlite(dir.join(SQLITE_FILE));
        Stores::open(&settings, dir, StorageMetrics::new()).await
    }

    /// Closes the pool (shutdown); every write committed before already
    /// is durable.
    pub async fn close(&self) -> Result<(), StorageError> {
        self.database.close().await;
        Ok(())
    }
}

/// A data dir of a build from before SQL (sled files, no embedded
/// database next to them) holds events this build would not see: starting
/// on it would look like data loss. Nothing was released with that layout,
/// so it is not imported; the operator is told what to do instead.
fn refuse_sled_only_data_dir(
    settings: &DatabaseSettings,
    data_dir: &Path,
) -> Result<(), StorageError> {
    let embedded = DatabaseLocation::embedded(data_dir);
    let sled_files = data_dir.join("conf").is_file() && data_dir.join("db").is_file();
    let DatabaseLocation::Sqlite(path) = &embedded else {
        return Ok(());
    };
    if settings.location == embedded && sled_files && !path.exists() {
        return Err(StorageError::OldLayout {
            data_dir: data_dir.display().to_string(),
        });
    }
    Ok(())
}

/// Runs `future` to completion from synchronous code: for the parts of the
/// engine that still run synchronously and read or write SQL (analytics
/// passes and reports, privacy). Call it from a `spawn_blocking` thread or
/// a multi-threaded runtime's worker; on a current-thread runtime's own
/// thread it panics (tokio cannot block that thread).
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sled_only_data_dir_of_an_earlier_build_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // What an earlier build left: a sled database, no SQLite file.
        drop(sled::open(dir.path()).unwrap());
        let error = Stores::open_embedded(dir.path()).await.unwrap_err();
        assert!(matches!(error, StorageError::OldLayout { .. }), "{error}");
        assert!(error.to_string().contains("NUDGE_CP_DATA_DIR"), "{error}");
        assert!(
            !dir.path().join(SQLITE_FILE).exists(),
            "nothing was created"
        );

        // A data dir of this build (both) opens again and again.
        let fresh = tempfile::tempdir().unwrap();
        let stores = Stores::open_embedded(fresh.path()).await.unwrap();
        stores.close().await.unwrap();
        drop(stores);
        Stores::open_embedded(fresh.path()).await.unwrap();
    }
}
