//! `nudge-bench`'s options: command-line flags, each also an environment
//! variable (`NUDGE_BENCH_*`); flags win over variables, `--quick` sets
//! shorter defaults that explicit values still override.

use std::path::PathBuf;
use std::time::Duration;

use super::Result;
use super::storage::Database;

#[derive(Debug, Clone)]
pub struct Options {
    pub duration: Duration,
    pub warmup: Duration,
    pub concurrency: Vec<usize>,
    pub batch_concurrency: Vec<usize>,
    pub e2e_events: usize,
    pub disk_events: usize,
    pub json: bool,
    pub bin_dir: Option<PathBuf>,
    pub tmp_dir: Option<PathBuf>,
    pub keep_logs: bool,
    /// Which sections run (`--only`); all when empty.
    pub only: Vec<String>,
    pub notify_count: u64,
    pub notify_email_count: u64,
    pub notify_workers: usize,
    pub notify_users: usize,
    /// Tracked events timed to their WebSocket frame (`stream`).
    pub stream_notifications: usize,
    /// Idle WebSockets held for the RSS figure (`stream`).
    pub stream_connections: usize,
    /// The engines the control plane runs on, in order: `e2e`, `notify`,
    /// `stream` and `storage` run once per engine (`--database`).
    pub databases: Vec<Database>,
    /// Events pushed over gRPC in the `storage` section.
    pub storage_events: usize,
    /// The replica counts the `replicas` section compares, in order, each
    /// on a fresh PostgreSQL database (`--replicas`).
    pub replicas: Vec<usize>,
    /// Users subscribed to the `broadcast` section's topic.
    pub broadcast_users: usize,
    /// Users notified one by one in its baseline (`None`: as many as
    /// `broadcast_users`; 0: no baseline).
    pub broadcast_baseline: Option<usize>,
}

/// The sections `--only` accepts, in the order they run.
pub const SECTIONS: [&str; 8] = [
    "intake",
    "e2e",
    "disk",
    "notify",
    "stream",
    "storage",
    "replicas",
    "broadcast",
];

impl Options {
    /// Whether section `name` (one of [`SECTIONS`]) runs.
    pub fn runs(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == name)
    }
}

pub const USAGE: &str = "\
nudge-bench: prints throughput, latency, RSS and disk figures of nudge-agent and
nudge-control-plane (build them first: cargo build --release --bins).

Options (each also as an environment variable):
  --duration D      measured time per load row (5s)            NUDGE_BENCH_DURATION
  --warmup D        excluded warm-up per load row (1s)         NUDGE_BENCH_WARMUP
  --concurrency L   /v1/track concurrencies (1,16,64)          NUDGE_BENCH_CONCURRENCY
  --batch-concurrency L  /v1/batch concurrencies (1,16)        NUDGE_BENCH_BATCH_CONCURRENCY
  --e2e-events N    events sent end to end (50000)             NUDGE_BENCH_E2E_EVENTS
  --disk-events N   events written with the control plane down (20000)  NUDGE_BENCH_DISK_EVENTS
  --notify N        notifies per channel, in-app and webhook (2000)  NUDGE_BENCH_NOTIFY
  --notify-email N  notifies by email (500)                    NUDGE_BENCH_NOTIFY_EMAIL
  --notify-workers N  concurrent /v1/notify callers (16)       NUDGE_BENCH_NOTIFY_WORKERS
  --stream N        tracked events timed to their live-stream frame (500)  NUDGE_BENCH_STREAM
  --stream-connections N  idle WebSockets held for RSS (2000)  NUDGE_BENCH_STREAM_CONNECTIONS
  --only LIST       run only these sections: intake (baseline and agent intake),
                    e2e, disk, notify (dispatch per channel to local peers:
                    in-app, a webhook receiver, SMTP via .venv's aiosmtpd),
                    stream (live-stream latency, idle WebSockets), storage
                    (gRPC ingest vs. a bare write, disk per event), replicas
                    (control planes sharing one PostgreSQL database: ingest,
                    notifications and CPU per replica count, failover time;
                    skipped without PostgreSQL unless named here), broadcast
                    (a broadcast to a topic vs. the same notifies one by one)  NUDGE_BENCH_ONLY
  --database LIST   control-plane engines, each runs e2e, notify, stream,
                    storage and broadcast: sqlite, postgres (a throwaway cluster of the
                    bench's own, durable defaults) (sqlite)  NUDGE_BENCH_DATABASE
  --storage-events N  events pushed in the storage section (200000)  NUDGE_BENCH_STORAGE_EVENTS
  --replicas LIST   replica counts compared in the replicas section, each with
                    --e2e-events events and --notify webhook notifies; the
                    largest (if 2 or more) also loses one to SIGKILL (1,3)  NUDGE_BENCH_REPLICAS
  --broadcast-users N  users subscribed to the broadcast's topic, 20% with quiet
                    hours now, 10% opted out (100000)  NUDGE_BENCH_BROADCAST_USERS
  --broadcast-baseline N  users notified one by one in the broadcast's baseline
                    (as many as --broadcast-users; 0: none)  NUDGE_BENCH_BROADCAST_BASELINE
  --quick           2s rows, 0.5s warm-up, 20000/10000 events, 1000/200 notifies,
                    50000 storage events, 20000 broadcast users  NUDGE_BENCH_QUICK=1
  --json            print one JSON document instead of the tables
  --bin-dir DIR     where nudge-agent and nudge-control-plane are (next to this program)
  --tmp-dir DIR     parent of the temporary data directories (the system temp dir)
  --keep-logs       keep the programs' data and logs, print where they are
Durations: 500ms, 5s, 1m or a number of seconds.";

fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("bad duration `{text}`"))?;
    if !(value.is_finite() && value >= 0.0) {
        return Err(format!("bad duration `{text}`").into());
    }
    Ok(Duration::from_secs_f64(value * scale))
}

fn parse_list(text: &str) -> Result<Vec<usize>> {
    let list = text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("bad number `{s}`"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if list.is_empty() || list.contains(&0) {
        return Err(format!("bad concurrency list `{text}`").into());
    }
    Ok(list)
}

fn parse_sections(text: &str) -> Result<Vec<String>> {
    let list: Vec<String> = text
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(bad) = list.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
        return Err(format!("unknown section `{bad}` (one of {})", SECTIONS.join(", ")).into());
    }
    if list.is_empty() {
        return Err("--only needs at least one section".into());
    }
    Ok(list)
}

fn parse_databases(text: &str) -> Result<Vec<Database>> {
    let list = text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(Database::parse)
        .collect::<Result<Vec<_>>>()?;
    if list.is_empty() {
        return Err("--database needs sqlite, postgres or both".into());
    }
    Ok(list)
}

/// Replica counts: each from 1 to 32 (the event feed's partitions; a
/// 33rd replica would hold none).
fn parse_replicas(text: &str) -> Result<Vec<usize>> {
    let list = parse_list(text).map_err(|_| format!("bad --replicas list `{text}`"))?;
    if let Some(bad) = list.iter().find(|&&n| n > 32) {
        return Err(format!("--replicas: {bad} is above 32, the event feed's partitions").into());
    }
    Ok(list)
}

fn positive(text: &str, what: &str) -> Result<usize> {
    match text.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{what} must be a number above 0, not `{text}`").into()),
    }
}

pub fn parse_options() -> Result<Options> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let quick = env("NUDGE_BENCH_QUICK").is_some_and(|v| v != "0")
        || std::env::args().any(|a| a == "--quick");
    let mut options = Options {
        duration: if quick {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(5)
        },
        warmup: if quick {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(1)
        },
        concurrency: vec![1, 16, 64],
        batch_concurrency: vec![1, 16],
        e2e_events: if quick { 20_000 } else { 50_000 },
        disk_events: if quick { 10_000 } else { 20_000 },
        json: false,
        bin_dir: None,
        tmp_dir: None,
        keep_logs: false,
        only: Vec::new(),
        notify_count: if quick { 1_000 } else { 2_000 },
        notify_email_count: if quick { 200 } else { 500 },
        notify_workers: 16,
        notify_users: 8,
        stream_notifications: if quick { 200 } else { 500 },
        stream_connections: if quick { 1_000 } else { 2_000 },
        databases: vec![Database::Sqlite],
        storage_events: if quick { 50_000 } else { 200_000 },
        replicas: vec![1, 3],
        broadcast_users: if quick { 20_000 } else { 100_000 },
        broadcast_baseline: None,
    };
    if let Some(v) = env("NUDGE_BENCH_DURATION") {
        options.duration = parse_duration(&v)?;
    }
    if let Some(v) = env("NUDGE_BENCH_WARMUP") {
        options.warmup = parse_duration(&v)?;
    }
    if let Some(v) = env("NUDGE_BENCH_CONCURRENCY") {
        options.concurrency = parse_list(&v)?;
    }
    if let Some(v) = env("NUDGE_BENCH_BATCH_CONCURRENCY") {
        options.batch_concurrency = parse_list(&v)?;
    }
    if let Some(v) = env("NUDGE_BENCH_E2E_EVENTS") {
        options.e2e_events = v.parse()?;
    }
    if let Some(v) = env("NUDGE_BENCH_DISK_EVENTS") {
        options.disk_events = v.parse()?;
    }
    if let Some(v) = env("NUDGE_BENCH_NOTIFY") {
        options.notify_count = positive(&v, "NUDGE_BENCH_NOTIFY")? as u64;
    }
    if let Some(v) = env("NUDGE_BENCH_NOTIFY_EMAIL") {
        options.notify_email_count = positive(&v, "NUDGE_BENCH_NOTIFY_EMAIL")? as u64;
    }
    if let Some(v) = env("NUDGE_BENCH_NOTIFY_WORKERS") {
        options.notify_workers = positive(&v, "NUDGE_BENCH_NOTIFY_WORKERS")?;
    }
    if let Some(v) = env("NUDGE_BENCH_STREAM") {
        options.stream_notifications = positive(&v, "NUDGE_BENCH_STREAM")?;
    }
    if let Some(v) = env("NUDGE_BENCH_STREAM_CONNECTIONS") {
        options.stream_connections = positive(&v, "NUDGE_BENCH_STREAM_CONNECTIONS")?;
    }
    if let Some(v) = env("NUDGE_BENCH_DATABASE") {
        options.databases = parse_databases(&v)?;
    }
    if let Some(v) = env("NUDGE_BENCH_STORAGE_EVENTS") {
        options.storage_events = positive(&v, "NUDGE_BENCH_STORAGE_EVENTS")?;
    }
    if let Some(v) = env("NUDGE_BENCH_REPLICAS") {
        options.replicas = parse_replicas(&v)?;
    }
    if let Some(v) = env("NUDGE_BENCH_BROADCAST_USERS") {
        options.broadcast_users = positive(&v, "NUDGE_BENCH_BROADCAST_USERS")?;
    }
    if let Some(v) = env("NUDGE_BENCH_BROADCAST_BASELINE") {
        options.broadcast_baseline = Some(v.trim().parse()?);
    }
    if let Some(v) = env("NUDGE_BENCH_ONLY") {
        options.only = parse_sections(&v)?;
    }
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value").into())
        };
        match name.as_str() {
            "--duration" => options.duration = parse_duration(&value()?)?,
            "--warmup" => options.warmup = parse_duration(&value()?)?,
            "--concurrency" => options.concurrency = parse_list(&value()?)?,
            "--batch-concurrency" => options.batch_concurrency = parse_list(&value()?)?,
            "--e2e-events" => options.e2e_events = value()?.parse()?,
            "--disk-events" => options.disk_events = value()?.parse()?,
            "--notify" => options.notify_count = positive(&value()?, "--notify")? as u64,
            "--notify-email" => {
                options.notify_email_count = positive(&value()?, "--notify-email")? as u64;
            }
            "--notify-workers" => {
                options.notify_workers = positive(&value()?, "--notify-workers")?;
            }
            "--stream" => options.stream_notifications = positive(&value()?, "--stream")?,
            "--stream-connections" => {
                options.stream_connections = positive(&value()?, "--stream-connections")?;
            }
            "--only" => options.only = parse_sections(&value()?)?,
            "--database" => options.databases = parse_databases(&value()?)?,
            "--storage-events" => {
                options.storage_events = positive(&value()?, "--storage-events")?;
            }
            "--replicas" => options.replicas = parse_replicas(&value()?)?,
            "--broadcast-users" => {
                options.broadcast_users = positive(&value()?, "--broadcast-users")?;
            }
            "--broadcast-baseline" => options.broadcast_baseline = Some(value()?.trim().parse()?),
            "--bin-dir" => options.bin_dir = Some(PathBuf::from(value()?)),
            "--tmp-dir" => options.tmp_dir = Some(PathBuf::from(value()?)),
            "--quick" => {}
            "--json" => options.json = true,
            "--keep-logs" => options.keep_logs = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option `{other}`\n\n{USAGE}").into()),
        }
    }
    if options.duration.is_zero() {
        return Err("--duration must be more than 0".into());
    }
    Ok(options)
}
