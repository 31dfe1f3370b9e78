//! Analytics: activity (events, users, sessions, resources, funnels) and
//! delivery (sent → clicked, times, cost, attributed outcomes) rollups,
//! maintained as data arrives and read by reports.
//!
//! # Promises
//!
//! * **Rollups are maintained incrementally**, never by scanning events at
//!   query time: a worker tails the store's event feed from a durable
//!   cursor and drains the delivery facts log (`crate::delivery::facts`),
//!   folding each into counters. A report reads only counters for the
//!   range asked, so its cost does not grow with the number of events.
//! * **Exactly once.** Each pass applies its counter changes, the new
//!   cursor and the list of the delivery facts it counted in one SQL
//!   transaction (table `analytics_rollups`, see
//!   [`crate::storage::RollupTable`]): a crash repeats a whole pass or
//!   none of it, and a pass computed from a state another writer changed
//!   meanwhile is refused, not applied (see `overlay`). The counted
//!   facts are removed from their SQL table after that commit, and again
//!   (idempotently) before the next pass reads the table, so a fact
//!   counted is never read again.
//! * **Exact counts.** Unique users and sessions are counted exactly, not
//!   with sketches: each actor's record keeps its active days, and an
//!   open session the last day it was counted (see `actor`, `activity`);
//!   an anonymous visitor who later identifies is one user (see
//!   `identity`).
//!
//! Times are UTC: a day is a UTC day, a week starts Monday (ISO).

mod activity;
mod actor;
mod attribution;
mod config;
mod delivery;
mod delivery_reports;
mod identity;
mod keys;
mod layout;
mod metrics;
mod overlay;
mod report;
mod reports;
mod worker;

pub use crate::money::{Money, MoneyError};
pub use config::{AnalyticsConfig, FunnelDefinition, provider_of};
pub use metrics::AnalyticsMetrics;
pub use report::{
    Cell, DEFAULT_LIMIT, Granularity, MAX_LIMIT, Report, ReportJson, ReportName, ReportQuery,
};
pub use worker::{EVENT_PAGE, FACT_PAGE, Interrupt};

/// Why an analytics operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// The query asked for something the report cannot answer; the
    /// parameter is the API's name for it.
    #[error("{parameter}: {message}")]
    Invalid {
        parameter: &'static str,
        message: String,
    },
    /// Another writer committed to the rollups while this pass ran (a
    /// second worker): the pass wrote nothing and is to be run again.
    #[error("the analytics rollups changed during the pass; it wrote nothing and is retried")]
    Conflict,
    #[error("analytics record is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] crate::storage::StorageError),
}

use std::sync::{Arc, Mutex};

use crate::delivery::Clock;
use crate::storage::{EventStore, RollupTable};

/// The rollups and their reports. Cheap to clone.
#[derive(Clone)]
pub struct Analytics {
    inner: Arc<Inner>,
}

struct Inner {
    store: EventStore,
    config: AnalyticsConfig,
    clock: Arc<dyn Clock>,
    metrics: AnalyticsMetrics,
    /// The rollups (see `layout`), in SQL.
    rollups: RollupTable,
    /// The delivery facts log (`crate::delivery::facts`), in SQL.
    deliveries: crate::storage::DeliveryTable,
    /// Held by every writer of `rollups` in this process (passes, sweeps,
    /// erase), so they take turns instead of failing each other's
    /// commits (see `overlay`).
    writer: Mutex<()>,
}

impl Analytics {
    /// The rollups over `stores`' database, with the metrics registered
    /// in `registry`. Call [`Analytics::run`] to keep the rollups up to
    /// date.
    pub fn open(
        stores: &crate::storage::Stores,
        config: AnalyticsConfig,
        clock: Arc<dyn Clock>,
        registry: &prometheus::Registry,
    ) -> Result<Analytics, AnalyticsError> {
        let metrics = AnalyticsMetrics::new()
            .map_err(|error| AnalyticsError::Corrupt(format!("metrics: {error}")))?;
        metrics
            .register(registry)
            .map_err(|error| AnalyticsError::Corrupt(format!("metrics: {error}")))?;
        Ok(Analytics {
            inner: Arc::new(Inner {
                store: stores.events.clone(),
                config,
                clock,
                metrics,
                rollups: stores.rollups.clone(),
                deliveries: stores.deliveries.table().clone(),
                writer: Mutex::new(()),
            }),
        })
    }

    pub fn config(&self) -> &AnalyticsConfig {
        &self.inner.config
    }

    /// Answers `query` from the rollups (as of the last committed pass).
    pub fn report(&self, query: &ReportQuery) -> Result<Report, AnalyticsError> {
        let Some(name) = query.report else {
            return Err(AnalyticsError::Invalid {
                parameter: "report",
                message: "name a report".to_owned(),
            });
        };
        let now = self.inner.clock.now();
        let source = reports::Source {
            table: &self.inner.rollups,
            config: &self.inner.config,
            today: keys::utc_date(now),
            now,
        };
        match name {
            ReportName::Summary => reports::summary(&source, query),
            ReportName::Resources => reports::resources(&source, query),
            ReportName::ResourceActions => reports::resource_actions(&source, query),
            ReportName::Funnels => reports::funnels(&source, query),
            ReportName::Sessions => reports::sessions(&source, query),
            ReportName::Users => reports::users(&source, query),
            ReportName::UserEvents => reports::user_events(&source, query),
            ReportName::Delivery => delivery_reports::delivery(&source, query),
            ReportName::Templates => delivery_reports::templates(&source, query),
            ReportName::Costs => delivery_reports::costs(&source, query),
            ReportName::Outcomes => delivery_reports::outcomes(&source, query),
            ReportName::Channels => delivery_reports::channels(&source, query),
        }
    }
}
