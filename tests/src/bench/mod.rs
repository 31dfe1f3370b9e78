//! The benchmark behind `nudge-bench`: prints figures for the agent and the control plane; it
//! asserts nothing about speed (issue 2, "Benchmark").
//!
//! ```text
//! cargo build --release --bins && cargo run --release -p nudge-e2e --bin nudge-bench
//! cargo run --release -p nudge-e2e --bin nudge-bench -- --quick --json
//! ```
//!
//! It starts the real `nudge-agent` and `nudge-control-plane` from the
//! directory this executable lives in (`target/release`, honouring
//! `CARGO_TARGET_DIR`) on free loopback ports with temporary data
//! directories, and runs:
//!
//! 1. a baseline: an HTTP server inside this process (its own runtime and
//!    threads) that reads the body and answers 200 `{"success":true}`;
//! 2. agent intake, single-event `/v1/track`, durable acks (fsync) and one
//!    `unsafe-ack-before-flush` row, each against a fresh agent;
//! 3. agent intake, `/v1/batch` of 100 events;
//! 4. end to end: N events into the agent until the control plane has stored
//!    them all and the agent's outbox is empty;
//! 5. RSS of both programs idle, at peak and after the drain (scenario 4);
//! 6. outbox bytes on disk per event with the control plane down, and after
//!    the backlog drains;
//! 7. notification dispatch (issue 3): notifications/s per channel (in-app,
//!    a webhook receiver, email to a local SMTP server), queue latency p50
//!    and p99 and the control plane's RSS ([`notify`]);
//! 8. the live stream's latency and idle WebSockets ([`stream`]);
//! 9. the control plane's own storage against a bare write ([`storage`]);
//! 10. several control planes on one PostgreSQL database (issue 13):
//!     events/s and notifications/s per replica count, CPU per 1,000
//!     events per replica, and the failover time after a SIGKILL
//!     ([`replicas`]);
//! 11. a broadcast to a topic of 100,000 users with preferences and quiet
//!     hours (issue 16): users planned/s and in-app deliveries/s, against
//!     the same notifies one per user ([`broadcast`]).
//!
//! `--only intake,e2e,disk,notify,stream,storage,replicas,broadcast` runs
//! some of them, e.g. `nudge-bench --only notify`.
//!
//! The load generator is the same for the baseline and the agent: a fixed
//! number of closed-loop workers, each on its own keep-alive HTTP/1.1
//! connection (hyper's connection-level client, no pool, so the client adds
//! as little as possible), the same pre-encoded request body, a warm-up
//! excluded from the figures, every latency kept (a sorted `Vec`, exact
//! percentiles) and non-2xx answers counted as errors. The load generator
//! shares the machine's cores with the server under test, as it does for
//! the baseline, so the ratio is fair; absolute figures are this machine's.
//!
//! During intake scenarios (1–3) no control plane runs: the agent buffers in
//! its outbox (quota 4GiB) and the shipper only backs off, so the figures are
//! the intake's alone. Scenario 4 measures the whole pipeline.
//!
//! # Layout
//!
//! [`options`] (flags and `NUDGE_BENCH_*`), [`load`] (the load generator),
//! [`bodies`], [`baseline`] (the do-nothing server), [`procstat`] (RSS and
//! CPU from `/proc`), [`scenarios`], [`notify`] (scenario 7, with its own
//! peers and table), [`stream`], [`storage`], [`replicas`] and
//! [`report`]; the programs are started
//! through the crate's harness ([`crate::Agent`], [`crate::ControlPlane`]).

pub mod baseline;
pub mod bodies;
pub mod broadcast;
pub mod load;
pub mod notify;
pub mod options;
pub mod procstat;
pub mod replicas;
pub mod report;
pub mod scenarios;
pub mod storage;
pub mod stream;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use crate::Setup;
use crate::binaries;
use bodies::{batch_body, track_body};
use options::Options;
use report::{machine_facts, render, to_json};
use scenarios::{EndToEnd, Row, agent_row, scenario_baseline, scenario_disk, scenario_end_to_end};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T, E = BoxError> = std::result::Result<T, E>;

const ADMIN_TOKEN: &str = "bench-admin-token";
/// The agent token the bench's control planes accept and its agents send:
/// the benchmark measures the authenticated path, as deployed.
const AGENT_TOKEN: &str = "bench-agent-token-0123456789";
const BATCH_EVENTS: usize = 100;

/// What every scenario needs.
pub struct Env {
    pub options: Options,
    pub setup: Setup,
}

/// The programs from `--bin-dir` or next to this executable; every agent
/// may buffer 4 GiB, so intake rows never hit the quota.
fn setup(options: &Options) -> Result<Setup> {
    let binary = |name: &str| -> Result<PathBuf> {
        binaries::locate(name, options.bin_dir.as_deref(), "release").map_err(|_| {
            format!("`{name}` not found next to nudge-bench: run `cargo build --release --bins` first (or pass --bin-dir)")
                .into()
        })
    };
    let owned = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    Ok(Setup {
        agent_bin: binary("nudge-agent")?,
        control_plane_bin: binary("nudge-control-plane")?,
        data_parent: options.tmp_dir.clone().unwrap_or_else(std::env::temp_dir),
        keep_data: options.keep_logs,
        dir_prefix: "nudge-bench-".into(),
        admin_token: ADMIN_TOKEN.into(),
        agent_token: AGENT_TOKEN.into(),
        agent_defaults: owned(&[
            ("NUDGE_AGENT_MAX_OUTBOX_BYTES", "4GiB"),
            ("NUDGE_AGENT_ID", "bench-agent"),
        ]),
        // The programs log warnings only, unless the bench's own RUST_LOG
        // asks for more (e.g. `sqlx::query=debug` to count statements;
        // with --keep-logs to read them).
        common_env: vec![(
            "RUST_LOG".into(),
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )],
        start_limit: Duration::from_secs(60),
    })
}

/// Runs every scenario and prints the report (tables, or JSON with
/// `--json`) on stdout; progress goes to stderr.
pub async fn run(options: Options) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("nudge-bench: warning: this is a debug build of the bench; use --release");
    }
    let env = Env {
        setup: setup(&options)?,
        options: options.clone(),
    };
    let facts = machine_facts(&options, &env);
    let (track, batch) = (track_body(), batch_body(BATCH_EVENTS));

    let mut rows = Vec::new();
    let mut intake_hwm = Vec::new();
    if options.runs("intake") {
        (rows, intake_hwm) = intake(&env, &track, &batch).await?;
    }
    let disk = if options.runs("disk") {
        eprintln!("nudge-bench: 6. outbox bytes on disk");
        Some(scenario_disk(&env, &batch).await?)
    } else {
        None
    };
    // The sections that start a control plane, once per engine.
    let mut engines = Vec::new();
    // Kept for the replicas section, which needs PostgreSQL whatever the engines.
    let mut postgres = None;
    let per_engine = ["e2e", "notify", "stream", "storage", "broadcast"]
        .iter()
        .any(|section| options.runs(section));
    for &database in options.databases.iter().filter(|_| per_engine) {
        eprintln!("nudge-bench: control plane on {}", database.name());
        let mut backing = storage::Backing::start(database)?;
        let mut results = EngineResults {
            database: database.name(),
            ..EngineResults::default()
        };
        if options.runs("e2e") {
            eprintln!("nudge-bench: 4-5. end to end and RSS");
            let env = env.on(&mut backing).await?;
            results.e2e = Some(scenario_end_to_end(&env, &batch).await?);
        }
        if options.runs("notify") {
            eprintln!("nudge-bench: 7. notification dispatch");
            let env = env.on(&mut backing).await?;
            results.dispatch = Some(notify::scenario_notify(&env).await?);
        }
        if options.runs("stream") {
            eprintln!("nudge-bench: 8. live stream");
            let env = env.on(&mut backing).await?;
            results.live = Some(stream::scenario_stream(&env).await?);
        }
        if options.runs("storage") {
            eprintln!("nudge-bench: 9. control-plane storage");
            results.storage = Some(storage::scenario_storage(&env, &mut backing).await?);
        }
        if options.runs("broadcast") {
            eprintln!("nudge-bench: 11. broadcast");
            results.broadcast = Some(broadcast::scenario_broadcast(&env, &mut backing).await?);
        }
        engines.push(results);
        if database == storage::Database::Postgres {
            postgres = Some(backing);
        }
    }
    let replicas = if options.runs("replicas") {
        eprintln!("nudge-bench: 10. replicas on one PostgreSQL database");
        replicas_section(&env, postgres, &batch).await?
    } else {
        None
    };
    let first_e2e = engines.first().and_then(|engine| engine.e2e.as_ref());

    if options.json {
        let mut document = to_json(&facts, &rows, first_e2e, disk.as_ref(), &intake_hwm);
        if let Some(first) = engines.first() {
            if let Some(dispatch) = &first.dispatch {
                document["notify"] = dispatch.to_json();
            }
            if let Some(live) = &first.live {
                document["stream"] = live.to_json();
            }
        }
        document["databases"] = engines
            .iter()
            .map(|engine| {
                let e2e = engine.e2e.as_ref().map(|e| {
                    serde_json::json!({
                        "events": e.events,
                        "events_per_sec_end_to_end": e.events as f64 / e.stored_secs,
                        "control_plane_rss_after_drain": e.control_plane.after_drain,
                    })
                });
                (
                    engine.database.to_owned(),
                    serde_json::json!({
                        "end_to_end": e2e,
                        "notify": engine.dispatch.as_ref().map(notify::NotifyReport::to_json),
                        "stream": engine.live.as_ref().map(stream::StreamReport::to_json),
                        "storage": engine.storage.as_ref().map(storage::StorageReport::to_json),
                        "broadcast": engine.broadcast.as_ref().map(broadcast::report::BroadcastReport::to_json),
                    }),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
        if let Some(replicas) = &replicas {
            document["replicas"] = replicas.to_json();
        }
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        print!(
            "{}",
            render(
                &facts,
                &rows,
                first_e2e,
                disk.as_ref(),
                &intake_hwm,
                (track.len(), batch.len())
            )
        );
        for (index, engine) in engines.iter().enumerate() {
            println!("\n== control plane on {} ==", engine.database);
            if index > 0
                && let Some(e) = &engine.e2e
            {
                println!(
                    "end to end: {} events stored in {:.2} s = {:.0} events/s",
                    e.events,
                    e.stored_secs,
                    e.events as f64 / e.stored_secs
                );
            }
            if let Some(dispatch) = &engine.dispatch {
                print!("{}", notify::render(dispatch));
            }
            if let Some(live) = &engine.live {
                print!("{}", stream::render(live));
            }
            if let Some(fan_out) = &engine.broadcast {
                print!("{}", broadcast::report::render(fan_out));
            }
        }
        let storage: Vec<storage::StorageReport> = engines
            .into_iter()
            .filter_map(|engine| engine.storage)
            .collect();
        if !storage.is_empty() {
            print!("{}", storage::render(&storage));
        }
        if let Some(replicas) = &replicas {
            print!(
                "{}",
                replicas::report::render(
                    replicas,
                    (options.e2e_events as u64).div_ceil(BATCH_EVENTS as u64) * BATCH_EVENTS as u64,
                    options.notify_count,
                    options.notify_workers
                )
            );
        }
    }
    Ok(())
}

/// Section 10 on the engines' PostgreSQL cluster if there is one, else on
/// a cluster of its own. Without PostgreSQL's server it is skipped (a note
/// in the report) unless `--only` named it.
async fn replicas_section(
    env: &Env,
    postgres: Option<storage::Backing>,
    batch: &Bytes,
) -> Result<Option<replicas::report::ReplicasReport>> {
    let mut backing = match postgres {
        Some(backing) => backing,
        None => match storage::Backing::start(storage::Database::Postgres) {
            Ok(backing) => backing,
            Err(error) if !env.options.only.iter().any(|s| s == "replicas") => {
                eprintln!("  replicas skipped: {error}");
                return Ok(Some(replicas::report::ReplicasReport {
                    notes: vec![format!("replicas skipped: {error}")],
                    ..Default::default()
                }));
            }
            Err(error) => return Err(error),
        },
    };
    Ok(Some(
        replicas::scenario_replicas(env, &mut backing, batch).await?,
    ))
}

/// What the sections that start a control plane measured on one engine.
#[derive(Default)]
struct EngineResults {
    database: &'static str,
    e2e: Option<EndToEnd>,
    dispatch: Option<notify::NotifyReport>,
    live: Option<stream::StreamReport>,
    storage: Option<storage::StorageReport>,
    broadcast: Option<broadcast::report::BroadcastReport>,
}

impl Env {
    /// This environment with the control plane on `backing`'s engine (a
    /// fresh database of its own on PostgreSQL).
    async fn on(&self, backing: &mut storage::Backing) -> Result<Env> {
        let mut setup = self.setup.clone();
        setup.common_env.extend(backing.control_plane_env().await?);
        Ok(Env {
            options: self.options.clone(),
            setup,
        })
    }
}

/// Scenarios 1-3: the baseline, then agent intake rows; returns the rows
/// and the agent's VmHWM after each intake row.
async fn intake(env: &Env, track: &Bytes, batch: &Bytes) -> Result<(Vec<Row>, Vec<(String, u64)>)> {
    let options = &env.options;
    eprintln!("nudge-bench: 1. baseline");
    let mut rows = scenario_baseline(options, track).await?;
    let baseline: BTreeMap<usize, f64> = rows
        .iter()
        .map(|r| (r.concurrency, r.result.per_sec()))
        .collect();

    eprintln!("nudge-bench: 2-3. agent intake");
    let mut intake_hwm = Vec::new();
    let mut plan: Vec<(String, &str, &'static str, &Bytes, usize, usize)> = Vec::new();
    for &c in &options.concurrency {
        plan.push((
            "agent /v1/track fsync".into(),
            "fsync",
            "/v1/track",
            track,
            1,
            c,
        ));
    }
    let unsafe_c = options.concurrency.iter().copied().max().unwrap_or(64);
    plan.push((
        "agent /v1/track unsafe-ack".into(),
        "unsafe-ack-before-flush",
        "/v1/track",
        track,
        1,
        unsafe_c,
    ));
    for &c in &options.batch_concurrency {
        plan.push((
            format!("agent /v1/batch x{BATCH_EVENTS} fsync"),
            "fsync",
            "/v1/batch",
            batch,
            BATCH_EVENTS,
            c,
        ));
    }
    for (label, durability, path, body, per_request, c) in plan {
        let (mut row, hwm) = agent_row(env, &label, durability, path, body, per_request, c).await?;
        if path == "/v1/track" {
            row.baseline_rps = baseline.get(&c).copied();
        }
        intake_hwm.push((format!("{} c={c}", label.trim_start_matches("agent ")), hwm));
        rows.push(row);
    }
    Ok((rows, intake_hwm))
}
