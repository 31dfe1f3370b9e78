//! The storage layer's Prometheus metrics: latency per operation (a fixed
//! set of names, never a query text or a user id), the pool's connections
//! in use and idle, callers waiting for one, and how long they waited.
//!
//! The pool gauges are read from the pool when Prometheus scrapes, so they
//! are never stale and need no task of their own.

use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Query latency buckets: 100 µs to 10 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Cheap to clone; clones share the metrics.
#[derive(Clone)]
pub struct StorageMetrics {
    /// `nudge_cp_storage_operation_duration_seconds{operation}`.
    operation: HistogramVec,
    /// `nudge_cp_storage_pool_acquire_duration_seconds`.
    acquire: Histogram,
    /// `nudge_cp_storage_pool_waiting`.
    waiting: IntGauge,
    /// The pool whose connections the scrape reports; set once open.
    pool: Arc<Mutex<Option<Weak<dyn PoolState>>>>,
}

/// What the scrape reads of a pool: (connections open, idle).
pub(crate) trait PoolState: Send + Sync {
    fn state(&self) -> (u32, usize);
}

impl StorageMetrics {
    pub fn new() -> Self {
        let operation = HistogramVec::new(
            HistogramOpts::new(
                "nudge_cp_storage_operation_duration_seconds",
                "Time of one storage operation (a transaction or a query), by operation.",
            )
            .buckets(BUCKETS.to_vec()),
            &["operation"],
        )
        .expect("static metric options are valid");
        let acquire = Histogram::with_opts(
            HistogramOpts::new(
                "nudge_cp_storage_pool_acquire_duration_seconds",
                "Time a storage operation waited for a pooled database connection.",
            )
            .buckets(BUCKETS.to_vec()),
        )
        .expect("static metric options are valid");
        let waiting = IntGauge::new(
            "nudge_cp_storage_pool_waiting",
            "Storage operations waiting for a pooled database connection now.",
        )
        .expect("static metric options are valid");
        StorageMetrics {
            operation,
            acquire,
            waiting,
            pool: Arc::new(Mutex::new(None)),
        }
    }

    /// Registers every storage metric in `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.operation.clone()))?;
        registry.register(Box::new(self.acquire.clone()))?;
        registry.register(Box::new(self.waiting.clone()))?;
        registry.register(Box::new(PoolCollector::new(Arc::clone(&self.pool))))?;
        Ok(())
    }

    pub(crate) fn watch(&self, pool: Weak<dyn PoolState>) {
        *self
            .pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(pool);
    }

    /// Starts timing `operation`; the time is recorded when the guard drops.
    pub(crate) fn time(&self, operation: &'static str) -> OperationTimer {
        OperationTimer {
            histogram: self.operation.with_label_values(&[operation]),
            started: Instant::now(),
        }
    }

    /// Marks a caller waiting for a connection until the guard drops, and
    /// records the wait.
    pub(crate) fn waiting(&self) -> WaitGuard {
        self.waiting.inc();
        WaitGuard {
            gauge: self.waiting.clone(),
            histogram: self.acquire.clone(),
            started: Instant::now(),
        }
    }
}

impl Default for StorageMetrics {
    fn default() -> Self {
        Self::new()
    }
}

pub(crate) struct OperationTimer {
    histogram: Histogram,
    started: Instant,
}

impl Drop for OperationTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

pub(crate) struct WaitGuard {
    gauge: IntGauge,
    histogram: Histogram,
    started: Instant,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.gauge.dec();
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

/// `nudge_cp_storage_pool_connections{state="in_use"|"idle"}`, read at
/// scrape time.
struct PoolCollector {
    pool: Arc<Mutex<Option<Weak<dyn PoolState>>>>,
    connections: IntGaugeVec,
}

impl PoolCollector {
    fn new(pool: Arc<Mutex<Option<Weak<dyn PoolState>>>>) -> Self {
        let connections = IntGaugeVec::new(
            Opts::new(
                "nudge_cp_storage_pool_connections",
                "Database connections of the pool, by state (in_use, idle).",
            ),
            &["state"],
        )
        .expect("static metric options are valid");
        PoolCollector { pool, connections }
    }
}

impl Collector for PoolCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.connections.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let pool = self
            .pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .and_then(Weak::upgrade);
        let (open, idle) = pool.map_or((0, 0), |pool| pool.state());
        let idle = i64::try_from(idle).unwrap_or(i64::MAX);
        self.connections
            .with_label_values(&["in_use"])
            .set(i64::from(open).saturating_sub(idle));
        self.connections.with_label_values(&["idle"]).set(idle);
        self.connections.collect()
    }
}
