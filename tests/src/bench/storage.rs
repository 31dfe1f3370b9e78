//! Scenario 9, the control plane's storage (issue 12, "Benchmark"): how fast
//! the control plane itself stores what agents push, against what the
//! database alone can write, and what the stored events cost in disk and
//! memory, on each engine named by `--database`.
//!
//! * **Ingest**: `--storage-events` events (realistic tracks, ~300 bytes of
//!   JSON each, unique ids) pushed straight to `nudge.v1.Ingest/Push` in
//!   batches of 500 by 8 concurrent gRPC clients, as a fleet of agents
//!   would; events/s is the count over the wall time until the last push
//!   was acknowledged (each answer comes after its batch committed).
//! * **Bare write** (the database's own limit, same run, same rows, same
//!   8 writers and 500 rows per transaction): into a table with only a
//!   unique id and the JSON, PostgreSQL by `COPY … FROM STDIN`, SQLite by
//!   one multi-row `INSERT` (SQLite has no COPY).
//! * **Disk and memory**: bytes the database grew by per stored event, and
//!   the control plane's RSS after the run.
//!
//! PostgreSQL runs as a throwaway cluster of the bench's own
//! ([`crate::postgres::Cluster`]) with PostgreSQL's default, durable
//! settings (fsync and synchronous commit on); SQLite is the embedded
//! default in the control plane's data directory.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nudge_proto::v1::envelope::Body;
use nudge_proto::v1::ingest_client::IngestClient;
use nudge_proto::v1::{Envelope, PushRequest, Track};
use serde_json::{Value, json};
use sqlx::Connection;

use super::procstat::{cpu_seconds, dir_bytes, memory};
use super::{Env, Result};
use crate::ControlPlane;
use crate::postgres::Cluster;

/// Events per push, as an agent's default batch.
const BATCH: usize = 500;
/// Concurrent pushers (agents).
const PUSHERS: usize = 8;

/// Which engine a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database {
    Sqlite,
    Postgres,
}

impl Database {
    pub fn name(self) -> &'static str {
        match self {
            Database::Sqlite => "sqlite",
            Database::Postgres => "postgres",
        }
    }

    pub fn parse(text: &str) -> Result<Database> {
        match text.trim() {
            "sqlite" => Ok(Database::Sqlite),
            "postgres" | "postgresql" => Ok(Database::Postgres),
            other => Err(format!("--database: {other:?} is neither sqlite nor postgres").into()),
        }
    }
}

/// A control plane on one engine: the URL it gets and, for PostgreSQL,
/// the cluster behind it.
pub struct Backing {
    pub database: Database,
    cluster: Option<Cluster>,
    next: u32,
}

impl Backing {
    /// For PostgreSQL, starts the bench's own cluster (durable defaults).
    pub fn start(database: Database) -> Result<Backing> {
        let cluster = match database {
            Database::Sqlite => None,
            Database::Postgres => Some(Cluster::start(&[])?),
        };
        Ok(Backing {
            database,
            cluster,
            next: 0,
        })
    }

    /// The throwaway cluster (PostgreSQL), e.g. for its CPU figures.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// Settings for one more control plane: a fresh database of its own
    /// (PostgreSQL), or nothing (SQLite in its data directory).
    pub async fn control_plane_env(&mut self) -> Result<Vec<(String, String)>> {
        let Some(cluster) = &self.cluster else {
            return Ok(Vec::new());
        };
        self.next += 1;
        let url = cluster
            .create_database(&format!("nudge_bench_{}", self.next))
            .await?;
        Ok(vec![("NUDGE_CP_DATABASE_URL".to_owned(), url)])
    }
}

#[derive(Debug, Default)]
pub struct StorageReport {
    pub database: &'static str,
    pub events: u64,
    pub ingest_per_sec: f64,
    pub bare_per_sec: f64,
    pub disk_bytes_per_event: f64,
    /// The database's own files per event: PostgreSQL's tables, indexes
    /// and TOAST (`pg_database_size`, without the WAL, which is recycled
    /// and bounded by `max_wal_size` whatever the store holds); SQLite's
    /// data dir, as `disk_bytes_per_event`.
    pub database_bytes_per_event: f64,
    /// The control plane's RSS once every event is stored.
    pub control_plane_rss: u64,
    /// Its peak RSS over the run (VmHWM): what a memory limit must allow.
    pub control_plane_peak_rss: u64,
    /// CPU (user + system) of the control plane per 1,000 events, from
    /// the first push until every event is stored: ingest with the engine
    /// and the analytics reading beside it, as in production.
    pub control_plane_cpu_ms_per_1000: f64,
    /// PostgreSQL's largest tables (with their indexes and TOAST) after
    /// the run, bytes per event: where the bytes go.
    pub largest_tables: Vec<(String, f64)>,
    /// What waited behind ingest while it ran flat out (see [`Backlog`]).
    pub backlog: Backlog,
}

impl StorageReport {
    pub fn to_json(&self) -> Value {
        json!({
            "database": self.database,
            "events": self.events,
            "ingest_events_per_sec": self.ingest_per_sec,
            "bare_write_events_per_sec": self.bare_per_sec,
            "ingest_share_of_bare": self.ingest_per_sec / self.bare_per_sec.max(1.0),
            "disk_bytes_per_event": self.disk_bytes_per_event,
            "database_bytes_per_event": self.database_bytes_per_event,
            "control_plane_rss_bytes": self.control_plane_rss,
            "control_plane_peak_rss_bytes": self.control_plane_peak_rss,
            "control_plane_cpu_ms_per_1000_events": self.control_plane_cpu_ms_per_1000,
            "largest_tables_bytes_per_event": self.largest_tables,
            "analytics_backlog_max_events": self.backlog.analytics_max,
            "analytics_backlog_at_end_events": self.backlog.analytics_at_end,
            "engine_feed_lag_max_seconds": self.backlog.engine_lag_max,
            "drained_after_seconds": self.backlog.drained_after,
        })
    }
}

fn envelope(run: &str, i: u64) -> Envelope {
    Envelope {
        id: format!("{run}-{i:012}"),
        user_id: format!("bench-user-{:05}", i % 10_000),
        context_json: r#"{"library":{"name":"nudge-bench","version":"0.1.0"}}"#.to_owned(),
        body: Some(Body::Track(Track {
            event: "Order Completed".to_owned(),
            properties_json: format!(
                r#"{{"orderId":"ord-{i:08}","total":129.95,"currency":"EUR","coupon":"SPRING-SALE","items":3,"category":"books","source":"nudge-bench"}}"#
            ),
        })),
        ..Envelope::default()
    }
}

/// Pushes `total` events from [`PUSHERS`] clients; returns the seconds
/// until the last was acknowledged.
async fn push_all(grpc: &str, token: &str, run: &str, total: u64) -> Result<f64> {
    let authorization: tonic::metadata::AsciiMetadataValue = format!("Bearer {token}")
        .parse()
        .map_err(|error| format!("agent token: {error}"))?;
    let batches = total.div_ceil(BATCH as u64);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let begin = Instant::now();
    let mut tasks = Vec::new();
    for pusher in 0..PUSHERS {
        let (next, run, grpc) = (Arc::clone(&next), run.to_owned(), grpc.to_owned());
        let authorization = authorization.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = IngestClient::connect(grpc)
                .await
                .map_err(|error| format!("connect: {error}"))?
                .max_encoding_message_size(64 << 20);
            loop {
                let batch = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if batch >= batches {
                    return Ok::<(), String>(());
                }
                let start = batch * BATCH as u64;
                let end = (start + BATCH as u64).min(total);
                let request = PushRequest {
                    agent_id: format!("bench-pusher-{pusher}"),
                    batch_id: format!("{run}-{batch}"),
                    envelopes: (start..end).map(|i| envelope(&run, i)).collect(),
                    ..PushRequest::default()
                };
                // An UNAVAILABLE answer is retried, as an agent would.
                loop {
                    // Signed as an agent is: the control plane requires it.
                    let mut call = tonic::Request::new(request.clone());
                    call.metadata_mut()
                        .insert("authorization", authorization.clone());
                    match client.push(call).await {
                        Ok(_) => break,
                        Err(status) if status.code() == tonic::Code::Unavailable => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(status) => return Err(format!("push: {status}")),
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|error| error.to_string())??;
    }
    Ok(begin.elapsed().as_secs_f64())
}

/// The JSON the control plane stores for an event of this shape, for the
/// bare write.
fn bare_rows(run: &str, start: u64, end: u64) -> Vec<(String, String)> {
    (start..end)
        .map(|i| {
            let envelope = envelope(run, i);
            let Some(Body::Track(track)) = &envelope.body else {
                unreachable!()
            };
            let json = format!(
                r#"{{"id":"{}","user_id":"{}","ingested_at":"2026-12-04T00:00:00Z","agent_id":"bench","context":{},"integrations":{{}},"type":"track","event":"{}","properties":{}}}"#,
                envelope.id, envelope.user_id, envelope.context_json, track.event, track.properties_json
            );
            (envelope.id, json)
        })
        .collect()
}

/// The same rows straight into a table with a unique id, [`PUSHERS`]
/// writers, one transaction per [`BATCH`] rows; events/s.
async fn bare_write(database: Database, url: &str, total: u64) -> Result<f64> {
    let batches = total.div_ceil(BATCH as u64);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let create = "CREATE TABLE bare (id TEXT PRIMARY KEY, payload TEXT NOT NULL)";
    let begin;
    match database {
        Database::Postgres => {
            let mut setup = sqlx::PgConnection::connect(url).await?;
            sqlx::query(create).execute(&mut setup).await?;
            begin = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..PUSHERS {
                let (next, url) = (Arc::clone(&next), url.to_owned());
                tasks.push(tokio::spawn(async move {
                    let mut conn = sqlx::PgConnection::connect(&url).await?;
                    loop {
                        let batch = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if batch >= batches {
                            return Ok::<(), sqlx::Error>(());
                        }
                        let start = batch * BATCH as u64;
                        let end = (start + BATCH as u64).min(total);
                        let mut text = String::new();
                        for (id, json) in bare_rows("bare", start, end) {
                            // COPY text format: tab-separated, backslash escaped.
                            let escaped = json.replace('\\', "\\\\");
                            let _ = writeln!(text, "{id}\t{escaped}");
                        }
                        let mut tx = conn.begin().await?;
                        let mut copy = tx.copy_in_raw("COPY bare (id, payload) FROM STDIN").await?;
                        copy.send(text.into_bytes()).await?;
                        copy.finish().await?;
                        tx.commit().await?;
                    }
                }));
            }
            for task in tasks {
                task.await.map_err(|error| error.to_string())??;
            }
        }
        Database::Sqlite => {
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(url)
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(30));
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(PUSHERS as u32)
                .connect_with(options)
                .await?;
            sqlx::query(create).execute(&pool).await?;
            begin = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..PUSHERS {
                let (next, pool) = (Arc::clone(&next), pool.clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        let batch = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if batch >= batches {
                            return Ok::<(), sqlx::Error>(());
                        }
                        let start = batch * BATCH as u64;
                        let end = (start + BATCH as u64).min(total);
                        let rows = bare_rows("bare", start, end);
                        let mut query = sqlx::QueryBuilder::new("INSERT INTO bare (id, payload) ");
                        query.push_values(&rows, |mut values, (id, json)| {
                            values.push_bind(id.as_str()).push_bind(json.as_str());
                        });
                        // IMMEDIATE: writers queue on the lock instead of
                        // failing an upgrade from a read.
                        let mut conn = pool.acquire().await?;
                        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
                        query.build().execute(&mut *conn).await?;
                        sqlx::query("COMMIT").execute(&mut *conn).await?;
                    }
                }));
            }
            for task in tasks {
                task.await.map_err(|error| error.to_string())??;
            }
            pool.close().await;
        }
    }
    Ok(total as f64 / begin.elapsed().as_secs_f64())
}

/// The control plane's own account of the work that waits behind ingest:
/// `nudge_cp_analytics_backlog` (events stored, not yet in the rollups)
/// and `nudge_cp_engine_feed_lag_seconds` (age of the oldest event not
/// yet planned), scraped every [`BACKLOG_SAMPLE`] while the pushers run.
#[derive(Debug, Clone, Default)]
pub struct Backlog {
    pub analytics_max: f64,
    /// When the last push was answered.
    pub analytics_at_end: f64,
    pub engine_lag_max: f64,
    /// Seconds from the last push until both were 0 again (`None`: not
    /// within [`DRAIN_LIMIT`]).
    pub drained_after: Option<f64>,
}

const BACKLOG_SAMPLE: Duration = Duration::from_millis(250);
/// How long the bench waits for the analytics and the engine to catch up.
const DRAIN_LIMIT: Duration = Duration::from_secs(300);
const ANALYTICS_BACKLOG: &str = "nudge_cp_analytics_backlog";
const ENGINE_LAG: &str = "nudge_cp_engine_feed_lag_seconds";

/// Samples the backlog until `done` is set; then the one at that moment.
async fn sample_backlog(
    control_plane: &ControlPlane,
    done: &std::sync::atomic::AtomicBool,
) -> Backlog {
    let mut backlog = Backlog::default();
    loop {
        let finished = done.load(std::sync::atomic::Ordering::Relaxed);
        if let Ok(text) = control_plane.metrics().await {
            let analytics = super::notify::max(&text, ANALYTICS_BACKLOG);
            backlog.analytics_max = backlog.analytics_max.max(analytics);
            backlog.analytics_at_end = analytics;
            backlog.engine_lag_max = backlog
                .engine_lag_max
                .max(super::notify::max(&text, ENGINE_LAG));
        }
        if finished {
            return backlog;
        }
        tokio::time::sleep(BACKLOG_SAMPLE).await;
    }
}

/// Seconds until the analytics backlog and the engine's lag are both 0.
async fn drain_time(control_plane: &ControlPlane) -> Option<f64> {
    let begin = Instant::now();
    while begin.elapsed() < DRAIN_LIMIT {
        if let Ok(text) = control_plane.metrics().await
            && super::notify::max(&text, ANALYTICS_BACKLOG) == 0.0
            && super::notify::max(&text, ENGINE_LAG) == 0.0
        {
            return Some(begin.elapsed().as_secs_f64());
        }
        tokio::time::sleep(BACKLOG_SAMPLE).await;
    }
    None
}

pub async fn scenario_storage(env: &Env, backing: &mut Backing) -> Result<StorageReport> {
    let total = env.options.storage_events as u64;
    let database = backing.database;
    let extra = backing.control_plane_env().await?;
    let mut control_plane = ControlPlane::new(&env.setup)?.with_env(
        extra
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str())),
    );
    control_plane.start().await?;
    let disk = || match (&backing.cluster, database) {
        (Some(cluster), Database::Postgres) => cluster.disk_bytes(),
        _ => dir_bytes(&control_plane.data_dir()),
    };
    let database_url = extra
        .iter()
        .find(|(key, _)| key == "NUDGE_CP_DATABASE_URL")
        .map(|(_, url)| url.clone());
    let database_size = || async {
        match &database_url {
            Some(url) => {
                let mut conn = sqlx::PgConnection::connect(url).await?;
                let size: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
                    .fetch_one(&mut conn)
                    .await?;
                Ok::<u64, super::BoxError>(u64::try_from(size).unwrap_or(0))
            }
            None => Ok(dir_bytes(&control_plane.data_dir())),
        }
    };
    let before = disk();
    let database_before = database_size().await?;
    let cpu = || {
        let [user, system] = cpu_seconds(&control_plane.process.pid().to_string());
        user + system
    };
    let cpu_before = cpu();
    eprintln!(
        "  storage ({}): {total} events pushed over gRPC by {PUSHERS} clients in batches of {BATCH}",
        database.name()
    );
    let run = format!("st{}", std::process::id());
    let done = std::sync::atomic::AtomicBool::new(false);
    let (seconds, mut backlog) = tokio::join!(
        async {
            let seconds = push_all(
                &control_plane.grpc_url(),
                control_plane.agent_token(),
                &run,
                total,
            )
            .await;
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            seconds
        },
        sample_backlog(&control_plane, &done),
    );
    let seconds = seconds?;
    let stored = control_plane.stored_count().await?;
    if stored < total {
        return Err(format!("the control plane stored {stored} of {total} events").into());
    }
    let cpu_seconds_used = cpu() - cpu_before;
    backlog.drained_after = drain_time(&control_plane).await;
    // Checkpoints and the WAL settle before the disk is measured.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = disk();
    let database_after = database_size().await?;
    let largest_tables = match &database_url {
        Some(url) => {
            let mut conn = sqlx::PgConnection::connect(url).await?;
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "SELECT relname::text, pg_total_relation_size(oid) FROM pg_class \
                   WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace \
                   ORDER BY 2 DESC LIMIT 5",
            )
            .fetch_all(&mut conn)
            .await?;
            rows.into_iter()
                .map(|(name, bytes)| (name, bytes as f64 / total as f64))
                .collect()
        }
        None => Vec::new(),
    };
    let (rss, peak_rss) = memory(control_plane.process.pid());
    let (status, _) = control_plane
        .process
        .terminate(Duration::from_secs(30))
        .await?;
    if !status.success() {
        return Err(format!("the control plane exited with {status}").into());
    }

    eprintln!(
        "  storage ({}): bare write of the same rows",
        database.name()
    );
    let bare_dir = tempfile::tempdir()?;
    let bare_url = match &backing.cluster {
        Some(cluster) => cluster.create_database("nudge_bench_bare").await?,
        None => bare_dir.path().join("bare.sqlite3").display().to_string(),
    };
    let bare_per_sec = bare_write(database, &bare_url, total).await?;

    Ok(StorageReport {
        database: database.name(),
        events: total,
        ingest_per_sec: total as f64 / seconds,
        bare_per_sec,
        disk_bytes_per_event: after.saturating_sub(before) as f64 / total as f64,
        database_bytes_per_event: database_after.saturating_sub(database_before) as f64
            / total as f64,
        control_plane_rss: rss,
        control_plane_peak_rss: peak_rss,
        control_plane_cpu_ms_per_1000: cpu_seconds_used * 1000.0 * 1000.0 / total as f64,
        largest_tables,
        backlog,
    })
}

pub fn render(reports: &[StorageReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n9. Control-plane storage: gRPC ingest ({PUSHERS} pushers, {BATCH} events a batch) vs. a bare write of the same rows"
    );
    let _ = writeln!(
        out,
        "{:<10} {:>10} {:>14} {:>14} {:>8} {:>12} {:>10} {:>10} {:>11} {:>12}",
        "database",
        "events",
        "ingest ev/s",
        "bare ev/s",
        "share",
        "disk B/ev",
        "db B/ev",
        "CP RSS MiB",
        "CP peak MiB",
        "CP ms/1k ev"
    );
    for report in reports {
        let _ = writeln!(
            out,
            "{:<10} {:>10} {:>14.0} {:>14.0} {:>7.0}% {:>12.0} {:>10.0} {:>10.1} {:>11.1} {:>12.0}",
            report.database,
            report.events,
            report.ingest_per_sec,
            report.bare_per_sec,
            100.0 * report.ingest_per_sec / report.bare_per_sec.max(1.0),
            report.disk_bytes_per_event,
            report.database_bytes_per_event,
            report.control_plane_rss as f64 / (1 << 20) as f64,
            report.control_plane_peak_rss as f64 / (1 << 20) as f64,
            report.control_plane_cpu_ms_per_1000,
        );
    }
    for report in reports
        .iter()
        .filter(|report| !report.largest_tables.is_empty())
    {
        let tables: Vec<String> = report
            .largest_tables
            .iter()
            .map(|(name, per_event)| format!("{name} {per_event:.0}"))
            .collect();
        let _ = writeln!(
            out,
            "{} largest tables, B/event with indexes: {}",
            report.database,
            tables.join(", ")
        );
    }
    for report in reports {
        let backlog = &report.backlog;
        let drained = match backlog.drained_after {
            Some(seconds) => format!("both caught up {seconds:.1} s after the last push"),
            None => format!(
                "not caught up {} s after the last push",
                DRAIN_LIMIT.as_secs()
            ),
        };
        let _ = writeln!(
            out,
            "{} behind ingest: analytics backlog max {:.0} events ({:.0} at the last push), engine feed lag max {:.1} s; {drained}",
            report.database,
            backlog.analytics_max,
            backlog.analytics_at_end,
            backlog.engine_lag_max,
        );
    }
    let _ = writeln!(
        out,
        "(disk = the data dir, PostgreSQL's whole cluster with its WAL; db = the database's own files: pg_database_size, or the SQLite data dir; CP ms/1k ev = control-plane CPU, user + system, from the first push until all are stored)"
    );
    out
}
