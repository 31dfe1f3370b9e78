//! Benchmark: the analytics rollups (`nudge_control_plane::analytics`) over
//! a synthetic event stream in the real SQL stores (embedded SQLite, or
//! PostgreSQL with `--database postgres`), with same-run baselines.
//!
//! 1. **Ingest cost of the rollups.** `M` events go through
//!    `EventStore::ingest` in batches of 500 (as agents send them) into a
//!    fresh store twice: rollups OFF (ingest only), then rollups ON (a
//!    thread runs `Analytics::step` in a loop meanwhile). Prints the ingest
//!    rate of both, and for ON the end-to-end rate: `M` / time until ingest
//!    finished *and* the rollups caught up.
//! 2. **Report latency.** Builds a store of `N` events with the rollups ON
//!    (catching up at the end; prints build time, disk size of the data dir,
//!    process RSS), then runs each main report query 200 times after 10
//!    warm-ups and prints p50/p99/max, after a baseline (`event_count` and
//!    a report over an empty range) timed the same way.
//!
//! The stream is deterministic (seeded xorshift): ~100k users, 30% of
//! events anonymous (some anonymous visitors later identify), ~10k
//! resources in `properties.product_id`, weighted e-commerce event names,
//! page/screen calls, explicit sessions for ~5% of users, timestamps over
//! the last 90 days in increasing order with jitter.
//!
//! Run: `cargo bench -p nudge-control-plane --bench analytics`
//! (`-- --events N --ingest-events M --queries Q --only ingest|query
//! --keep --database sqlite|postgres`; defaults 10,000,000 / 1,000,000 /
//! 200 / sqlite). Data dirs go under `target/bench-analytics/` and are
//! removed at the end unless `--keep`. With `--database postgres` each
//! store is a fresh database on the server `NUDGE_TEST_DATABASE_URL` names
//! (as the tests use; not dropped afterwards), and the disk figures are of
//! the data dir only.
//! Prints figures; it asserts nothing about speed. Progress goes to stderr
//! every 30 s. Mind the disk: at 200k events the sled store with rollups
//! took ~1 GB (~5 KB per event), so a 10M-event run may need tens of GB.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use nudge_control_plane::analytics::{
    Analytics, AnalyticsConfig, FunnelDefinition, Granularity, ReportName, ReportQuery,
};
use nudge_control_plane::delivery::SystemClock;
use nudge_control_plane::event::{Event, EventBody, JsonObject};
use nudge_control_plane::storage::{
    DatabaseSettings, EventStore, SQLITE_FILE, StorageMetrics, Stores, block_on,
};
use serde_json::{Value, json};

/// The runtime the SQL event store runs on; the benchmark's own threads
/// enter it and wait on it with `block_on`.
static RUNTIME: std::sync::LazyLock<tokio::runtime::Runtime> = std::sync::LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
});

/// Events per `ingest` call, as an agent batches them.
const BATCH: usize = 500;
const USERS: u64 = 100_000;
const ANONYMOUS_VISITORS: u64 = 50_000;
const RESOURCES: u64 = 10_000;
const SPAN_DAYS: i64 = 90;
const WARMUPS: usize = 10;

#[path = "support/args.rs"]
mod args;
use args::{arg, arg_text, flag};

/// xorshift64*: deterministic, no crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Skewed towards 0 (popular items first): `n * u^2`.
    fn skewed(&mut self, n: u64) -> u64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((u * u) * n as f64) as u64
    }
}

/// The synthetic stream: event `i` of `total`, in order.
struct Generator {
    rng: Rng,
    total: u64,
    next: u64,
    start_ms: i64,
    span_ms: i64,
    /// Explicit sessions open, per user number.
    open_sessions: HashMap<u64, u64>,
    /// Anonymous visitors that already identified.
    identified: HashSet<u64>,
    /// Events per user of the explicit-session 5%, to pick the user the
    /// per-user queries ask about.
    session_user_events: HashMap<u64, u64>,
}

impl Generator {
    fn new(total: u64, end: Timestamp) -> Self {
        let span_ms = SPAN_DAYS * 86_400_000;
        Generator {
            rng: Rng(0x9E37_79B9_7F4A_7C15),
            total: total.max(1),
            next: 0,
            start_ms: end.as_millisecond() - span_ms,
            span_ms,
            open_sessions: HashMap::new(),
            identified: HashSet::new(),
            session_user_events: HashMap::new(),
        }
    }

    /// The explicit-session user with the most events (lowest id on ties)
    /// and that count: a typical-to-busy user, for the per-user queries.
    fn query_user(&self) -> (String, u64) {
        let (user, count) = self
            .session_user_events
            .iter()
            .max_by_key(|&(user, count)| (*count, std::cmp::Reverse(*user)))
            .map_or((0, 0), |(user, count)| (*user, *count));
        (format!("u-{user}"), count)
    }

    fn batch(&mut self, size: usize) -> Vec<Event> {
        let mut events = Vec::with_capacity(size);
        while events.len() < size && self.next < self.total {
            events.push(self.event());
        }
        events
    }

    fn event(&mut self) -> Event {
        let i = self.next;
        self.next += 1;
        let step_ms = (self.span_ms / self.total as i64).max(1);
        let base = self.start_ms
            + (i128::from(i) * i128::from(self.span_ms) / i128::from(self.total)) as i64;
        let jitter = self.rng.below((2 * step_ms) as u64) as i64;
        let at = Timestamp::from_millisecond(base + jitter).unwrap();

        let mut user_id = None;
        let mut anonymous_id = None;
        let mut body = None;
        if self.rng.below(100) < 30 {
            let visitor = self.rng.below(ANONYMOUS_VISITORS);
            anonymous_id = Some(format!("a-{visitor}"));
            // A quarter of the visitors identify, at a random later event.
            if visitor.is_multiple_of(4)
                && !self.identified.contains(&visitor)
                && self.rng.below(20) == 0
            {
                self.identified.insert(visitor);
                user_id = Some(format!("u-{}", visitor.wrapping_mul(7_919) % USERS));
                body = Some(EventBody::Identify {
                    traits: object(json!({"plan": "free"})),
                });
            }
        } else {
            let user = self.rng.below(USERS);
            user_id = Some(format!("u-{user}"));
            if user.is_multiple_of(20) {
                *self.session_user_events.entry(user).or_default() += 1;
                body = match self.open_sessions.get(&user).copied() {
                    None => {
                        self.open_sessions.insert(user, i);
                        Some(EventBody::SessionStart {
                            session_id: format!("s-{user}-{i}"),
                            properties: JsonObject::new(),
                        })
                    }
                    Some(started) if self.rng.below(15) == 0 => {
                        self.open_sessions.remove(&user);
                        Some(EventBody::SessionEnd {
                            session_id: format!("s-{user}-{started}"),
                            properties: JsonObject::new(),
                        })
                    }
                    Some(_) => None,
                };
            }
        }
        let body = body.unwrap_or_else(|| self.action());
        Event {
            id: format!("ev-{i}"),
            user_id,
            anonymous_id,
            timestamp: Some(at),
            sent_at: Some(at),
            received_at: Some(at),
            ingested_at: at,
            agent_id: "bench-agent".to_owned(),
            write_key: None,
            context: JsonObject::new(),
            integrations: JsonObject::new(),
            body,
        }
    }

    /// A track (or page/screen) call with the weighted names.
    fn action(&mut self) -> EventBody {
        let roll = self.rng.below(100);
        let name = match roll {
            0..50 => "view",
            50..70 => "click",
            70..73 => "favorite",
            73..74 => "unfavorite",
            74..84 => "cart_add",
            84..87 => "cart_remove",
            87..90 => "purchase",
            90..93 => {
                return EventBody::Page {
                    name: Some("Product".to_owned()),
                    category: Some("catalog".to_owned()),
                    properties: object(json!({"path": "/products"})),
                };
            }
            93..95 => {
                return EventBody::Screen {
                    name: Some("Home".to_owned()),
                    category: None,
                    properties: JsonObject::new(),
                };
            }
            95..98 => "search",
            _ => "share",
        };
        let properties = match name {
            "search" => json!({"query": "shoes"}),
            "share" => {
                json!({"product_id": format!("p-{}", self.rng.skewed(RESOURCES)), "to": "link"})
            }
            "purchase" => json!({
                "product_id": format!("p-{}", self.rng.skewed(RESOURCES)),
                "amount": (self.rng.below(10_000) + 100) as f64 / 100.0,
            }),
            _ => json!({"product_id": format!("p-{}", self.rng.skewed(RESOURCES))}),
        };
        EventBody::Track {
            event: name.to_owned(),
            properties: object(properties),
        }
    }
}

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        _ => JsonObject::new(),
    }
}

fn analytics_config() -> AnalyticsConfig {
    AnalyticsConfig {
        funnels: vec![FunnelDefinition {
            name: "checkout".to_owned(),
            steps: vec!["view".into(), "cart_add".into(), "purchase".into()],
            window: Duration::from_secs(7 * 86_400),
        }],
        outcome_events: vec!["purchase".to_owned()],
        ..AnalyticsConfig::default()
    }
}

/// A fresh data dir `name` under `root`.
fn fresh_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `target/bench-analytics`, found from the bench binary's own path
/// (`target/release/deps/analytics-…`), so `CARGO_TARGET_DIR` is honoured.
fn bench_root() -> PathBuf {
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .find(|dir| dir.join("CACHEDIR.TAG").exists())
            .map(Path::to_path_buf)
    });
    let target =
        from_exe.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("bench-analytics")
}

/// Bytes on disk under `dir` (allocated blocks, like `du`).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            total += disk_usage(&entry.path());
        } else {
            total += meta.blocks() * 512;
        }
    }
    total
}

/// A `/proc/self/status` field in MiB (`VmRSS`, `VmHWM`).
fn proc_status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn rate(events: u64, took: Duration) -> f64 {
    events as f64 / took.as_secs_f64().max(1e-9)
}

/// What one ingest run measured.
struct IngestRun {
    events: u64,
    /// Time spent generating events (excluded from `ingest`).
    generate: Duration,
    /// From the first ingest call until the last returned.
    ingest: Duration,
    /// From the first ingest call until the rollups caught up (ON only).
    caught_up: Option<Duration>,
    /// Sum of what `step` reported applying (ON only).
    applied: u64,
    steps: u64,
    /// See [`Generator::query_user`].
    query_user: (String, u64),
}

/// Ingests `total` generated events in batches into `store`; with
/// `analytics`, a thread steps the rollups meanwhile and until caught up.
/// `pregenerate` builds every batch before the clock starts (ingest-rate
/// runs); otherwise generation is interleaved and timed apart.
fn ingest_run(
    store: &EventStore,
    analytics: Option<&Analytics>,
    total: u64,
    end: Timestamp,
    pregenerate: bool,
    dir: &Path,
) -> IngestRun {
    let mut generator = Generator::new(total, end);
    let mut generate = Duration::ZERO;
    let mut ready: Vec<Vec<Event>> = Vec::new();
    if pregenerate {
        let began = Instant::now();
        loop {
            let batch = generator.batch(BATCH);
            if batch.is_empty() {
                break;
            }
            ready.push(batch);
        }
        ready.reverse();
        generate = began.elapsed();
    }
    let ingest_done = AtomicBool::new(false);
    let applied_so_far = AtomicU64::new(0);
    let began = Instant::now();
    // Every 30 s on stderr, for long runs.
    let progress = |stored: u64, stage: &str| {
        eprintln!(
            "  … {:>6.0} s: {stored} / {total} ingested, {} applied by step(), data dir {:.0} MiB{stage}",
            began.elapsed().as_secs_f64(),
            applied_so_far.load(Ordering::Relaxed),
            mib(disk_usage(dir)),
        );
    };
    let mut stored = 0u64;
    let mut run = std::thread::scope(|scope| {
        let worker = analytics.map(|analytics| {
            let ingest_done = &ingest_done;
            let applied_so_far = &applied_so_far;
            scope.spawn(move || {
                let _runtime = RUNTIME.enter();
                let (mut applied, mut steps) = (0u64, 0u64);
                loop {
                    // Read before the step: a 0 from a step that began after
                    // the last ingest returned means everything is applied.
                    let finished = ingest_done.load(Ordering::Acquire);
                    let n = analytics.step().expect("analytics step");
                    steps += 1;
                    applied += n as u64;
                    applied_so_far.store(applied, Ordering::Relaxed);
                    if n == 0 {
                        if finished {
                            return (began.elapsed(), applied, steps);
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            })
        });
        let mut last_report = Instant::now();
        loop {
            let batch = if pregenerate {
                ready.pop().unwrap_or_default()
            } else {
                let t = Instant::now();
                let batch = generator.batch(BATCH);
                generate += t.elapsed();
                batch
            };
            if batch.is_empty() {
                break;
            }
            let outcome = block_on(store.ingest(batch)).expect("ingest");
            assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
            stored += u64::from(outcome.stored);
            if last_report.elapsed() > Duration::from_secs(30) {
                last_report = Instant::now();
                progress(stored, "");
            }
        }
        let ingest = began.elapsed();
        ingest_done.store(true, Ordering::Release);
        let (caught_up, applied, steps) = match worker {
            Some(worker) => {
                progress(stored, "; ingest done, rollups catching up");
                while !worker.is_finished() {
                    std::thread::sleep(Duration::from_millis(50));
                    if last_report.elapsed() > Duration::from_secs(30) {
                        last_report = Instant::now();
                        progress(stored, "; rollups catching up");
                    }
                }
                let (at, applied, steps) = worker.join().unwrap();
                (Some(at), applied, steps)
            }
            None => (None, 0, 0),
        };
        IngestRun {
            events: 0,
            generate,
            ingest,
            caught_up,
            applied,
            steps,
            query_user: (String::new(), 0),
        }
    });
    run.events = stored;
    run.query_user = generator.query_user();
    run
}

fn open_store(dir: &Path) -> (EventStore, Stores) {
    let settings = match arg_text("--database").as_deref() {
        Some("postgres") => DatabaseSettings {
            location: block_on(nudge_e2e::postgres::fresh_database())
                .parse()
                .expect("a postgres URL"),
            pool_size: 8,
            connect_timeout: Duration::from_secs(10),
        },
        _ => DatabaseSettings::sqlite(dir.join(SQLITE_FILE)),
    };
    let stores = block_on(Stores::open(&settings, dir, StorageMetrics::new())).unwrap();
    (stores.events.clone(), stores)
}

fn open_analytics(stores: &Stores) -> Analytics {
    let registry = prometheus::Registry::new();
    Analytics::open(stores, analytics_config(), Arc::new(SystemClock), &registry).unwrap()
}

fn applied_note(run: &IngestRun) -> String {
    if run.applied >= run.events {
        format!("{} applied in {} steps", run.applied, run.steps)
    } else {
        format!(
            "WARNING: step() reported {} applied of {} events ({} steps) — rollups not doing the work?",
            run.applied, run.events, run.steps
        )
    }
}

fn ingest_phase(root: &Path, total: u64, end: Timestamp, keep: bool) {
    println!();
    println!(
        "== 1. ingest rate, rollups OFF vs ON: {total} events, batches of {BATCH}, fresh store each (generation not timed) =="
    );

    // RSS is read at the end of each run, its store still open. The OFF
    // run goes first, so what the allocator kept from it is in ON's too.
    let rss = || proc_status_mib("VmRSS:").unwrap_or(f64::NAN);
    let off_dir = fresh_dir(root, "ingest-off");
    let (off, off_rss) = {
        let (store, _db) = open_store(&off_dir);
        let run = ingest_run(&store, None, total, end, true, &off_dir);
        (run, rss())
    };
    let off_disk = disk_usage(&off_dir);
    if !keep {
        std::fs::remove_dir_all(&off_dir).ok();
    }

    let on_dir = fresh_dir(root, "ingest-on");
    let (on, on_rss) = {
        let (store, stores) = open_store(&on_dir);
        let analytics = open_analytics(&stores);
        let run = ingest_run(&store, Some(&analytics), total, end, true, &on_dir);
        (run, rss())
    };
    let on_disk = disk_usage(&on_dir);
    if !keep {
        std::fs::remove_dir_all(&on_dir).ok();
    }

    let base = rate(off.events, off.ingest);
    println!(
        "{:<46} {:>10} {:>10} {:>12} {:>9} {:>10} {:>10}",
        "run", "events", "time (s)", "events/s", "vs OFF", "disk (MiB)", "RSS (MiB)"
    );
    let row = |label: &str, events: u64, took: Duration, end_state: Option<(u64, f64)>| {
        let r = rate(events, took);
        let (disk, rss) = end_state.map_or((String::new(), String::new()), |(disk, rss)| {
            (format!("{:.0}", mib(disk)), format!("{rss:.0}"))
        });
        println!(
            "{label:<46} {events:>10} {:>10.2} {r:>12.0} {:>8.1}% {disk:>10} {rss:>10}",
            took.as_secs_f64(),
            100.0 * r / base,
        );
    };
    row(
        "OFF: ingest only (baseline)",
        off.events,
        off.ingest,
        Some((off_disk, off_rss)),
    );
    row("ON: ingest while step() runs", on.events, on.ingest, None);
    let caught_up = on.caught_up.unwrap_or(on.ingest);
    row(
        "ON: end to end (ingested + rollups caught up)",
        on.events,
        caught_up,
        Some((on_disk, on_rss)),
    );
    println!(
        "ON: rollups caught up {:.2} s after ingest finished; {}",
        caught_up.saturating_sub(on.ingest).as_secs_f64(),
        applied_note(&on)
    );
    println!(
        "(generating the events took {:.2} s per run, outside the timings)",
        off.generate.as_secs_f64()
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Times `f` `runs` times after the warm-ups; prints one row. `f` returns
/// the rows it answered, or an error text.
fn time_query(label: &str, runs: usize, mut f: impl FnMut() -> Result<usize, String>) {
    let mut outcome = Ok(0);
    for _ in 0..WARMUPS {
        outcome = f();
    }
    if let Err(error) = &outcome {
        println!("{label:<52} ERROR: {error}");
        return;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let began = Instant::now();
        outcome = f();
        times.push(began.elapsed());
    }
    times.sort();
    let rows = match outcome {
        Ok(rows) => rows.to_string(),
        Err(error) => format!("ERROR: {error}"),
    };
    println!(
        "{label:<52} {:>10.3} {:>10.3} {:>10.3} {:>7}",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        ms(*times.last().unwrap()),
        rows
    );
}

fn query_phase(root: &Path, total: u64, runs: usize, end: Timestamp) {
    println!();
    println!(
        "== 2. report latency over {total} events (rollups ON while building, caught up before querying) =="
    );
    let dir = fresh_dir(root, "query");
    let (store, stores) = open_store(&dir);
    let analytics = open_analytics(&stores);
    let build = ingest_run(&store, Some(&analytics), total, end, false, &dir);
    let built = build.caught_up.unwrap_or(build.ingest);
    println!(
        "build: {} events in {:.1} s ({:.0} events/s end to end; ingest done at {:.1} s; {:.1} s of it generating events); {}",
        build.events,
        built.as_secs_f64(),
        rate(build.events, built),
        build.ingest.as_secs_f64(),
        build.generate.as_secs_f64(),
        applied_note(&build)
    );
    println!(
        "data dir {}: {:.0} MiB on disk; process RSS {:.0} MiB (peak {:.0} MiB)",
        dir.display(),
        mib(disk_usage(&dir)),
        proc_status_mib("VmRSS:").unwrap_or(f64::NAN),
        proc_status_mib("VmHWM:").unwrap_or(f64::NAN),
    );

    let last_day: Date = end.to_zoned(TimeZone::UTC).date();
    let first_day = last_day.checked_sub((SPAN_DAYS + 1).days()).unwrap();
    let days_ago = |n: i64| last_day.checked_sub(n.days()).unwrap();
    let whole = ReportQuery {
        from: Some(first_day),
        to: Some(last_day),
        ..ReportQuery::default()
    };
    let (user, user_events) = &build.query_user;
    let empty_day = Date::new(2000, 1, 1).unwrap();
    let queries: Vec<(&str, ReportQuery)> = vec![
        (
            "baseline: summary of an empty range (2000-01-01)",
            ReportQuery {
                report: Some(ReportName::Summary),
                from: Some(empty_day),
                to: Some(empty_day),
                ..ReportQuery::default()
            },
        ),
        (
            "summary by day, last 30 days",
            ReportQuery {
                report: Some(ReportName::Summary),
                from: Some(days_ago(29)),
                to: Some(last_day),
                granularity: Some(Granularity::Day),
                ..ReportQuery::default()
            },
        ),
        (
            "summary by month, whole range",
            ReportQuery {
                report: Some(ReportName::Summary),
                granularity: Some(Granularity::Month),
                ..whole.clone()
            },
        ),
        (
            "resources, top 100, whole range",
            ReportQuery {
                report: Some(ReportName::Resources),
                limit: Some(100),
                ..whole.clone()
            },
        ),
        (
            "resources, top 100, last 7 days",
            ReportQuery {
                report: Some(ReportName::Resources),
                from: Some(days_ago(6)),
                to: Some(last_day),
                limit: Some(100),
                ..ReportQuery::default()
            },
        ),
        (
            "funnels: checkout (view→cart_add→purchase), whole",
            ReportQuery {
                report: Some(ReportName::Funnels),
                funnel: Some("checkout".to_owned()),
                ..whole.clone()
            },
        ),
        (
            "users: one user, whole range",
            ReportQuery {
                report: Some(ReportName::Users),
                user: Some(user.clone()),
                ..whole.clone()
            },
        ),
        (
            "sessions: one user, whole range",
            ReportQuery {
                report: Some(ReportName::Sessions),
                user: Some(user.clone()),
                ..whole.clone()
            },
        ),
        (
            "delivery by day, whole range (no deliveries)",
            ReportQuery {
                report: Some(ReportName::Delivery),
                granularity: Some(Granularity::Day),
                ..whole.clone()
            },
        ),
        (
            "channels ranking, whole range",
            ReportQuery {
                report: Some(ReportName::Channels),
                ..whole
            },
        ),
    ];

    println!(
        "{runs} runs per query after {WARMUPS} warm-ups, sequential, one thread; range {first_day}..={last_day}; \
         user {user} ({user_events} events, the busiest of the 5% with explicit sessions)"
    );
    println!(
        "{:<52} {:>10} {:>10} {:>10} {:>7}",
        "query", "p50 (ms)", "p99 (ms)", "max (ms)", "rows"
    );
    time_query("baseline: store.event_count()", runs, || {
        block_on(store.event_count())
            .map(|n| n as usize)
            .map_err(|e| e.to_string())
    });
    for (label, query) in &queries {
        time_query(label, runs, || {
            analytics
                .report(query)
                .map(|report| report.rows.len())
                .map_err(|e| e.to_string())
        });
    }
    println!("(rows = rows in the last answer; event_count's \"rows\" is the count itself)");
    drop(analytics);
    drop(store);
    drop(stores);
}

fn main() {
    let _runtime = RUNTIME.enter();
    let events = arg("--events", 10_000_000) as u64;
    let ingest_events = arg("--ingest-events", 1_000_000) as u64;
    let runs = arg("--queries", 200).max(1);
    let keep = flag("--keep");
    let only = arg_text("--only");
    let root = bench_root();
    std::fs::create_dir_all(&root).unwrap();
    // The stream ends now: "last 30 days" is relative to today (UTC).
    let end = Timestamp::now();

    println!("analytics benchmark (nudge-control-plane, benches/analytics.rs)");
    println!(
        "machine: {} cores (available_parallelism)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!(
        "parameters: --ingest-events {ingest_events} --events {events} --queries {runs}; batch {BATCH}; \
         stream: {USERS} users, 30% anonymous events ({ANONYMOUS_VISITORS} visitors, 1/4 identify), \
         {RESOURCES} resources, {SPAN_DAYS} days ending now; funnel checkout = view→cart_add→purchase (7d)"
    );
    println!(
        "database: {}; data dirs under {}{}",
        arg_text("--database").unwrap_or_else(|| "sqlite".to_owned()),
        root.display(),
        if keep { " (kept: --keep)" } else { "" }
    );

    if only.as_deref() != Some("query") {
        ingest_phase(&root, ingest_events, end, keep);
    }
    if only.as_deref() != Some("ingest") {
        query_phase(&root, events, runs, end);
        if !keep {
            std::fs::remove_dir_all(root.join("query")).ok();
        }
    }
    if !keep {
        std::fs::remove_dir(&root).ok();
    }
}
