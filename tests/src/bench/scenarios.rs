//! The scenarios, each on fresh program instances: the baseline server,
//! agent intake (single calls and batches, with and without fsync before
//! the ack), end to end through the control plane with RSS and CPU, and the
//! outbox's bytes on disk. Promises: intake rows run without a control plane
//! (the agent buffers, the shipper only backs off), so their figures are the
//! intake's alone; a scenario fails, rather than reports, when the pipeline
//! does not deliver within 300 s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use super::baseline::start_baseline;
use super::load::{LoadResult, Stop, Target, run_load};
use super::options::Options;
use super::procstat::{RssSampler, cpu_seconds, memory, with_cpu};
use super::{BATCH_EVENTS, Env, Result};
use crate::metrics::metric_value;
use crate::ports::free_loopback;
use crate::{Agent, ControlPlane, http};

/// Polls the agent every `poll` until its outbox is empty; fails after
/// `deadline` (300 s after the scenario's start).
async fn until_outbox_empty(agent: &Agent, deadline: Instant, poll: Duration) -> Result<()> {
    loop {
        if get(&agent.metrics().await?, "nudge_agent_outbox_events") == 0.0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("agent outbox not empty after 300s".into());
        }
        tokio::time::sleep(poll).await;
    }
}

/// Polls the control plane's stats every 25 ms until it has stored
/// `expected` events (the end of an end-to-end measurement); fails after
/// `deadline` (300 s after the scenario's start). On a shared database any
/// replica's stats count every replica's events.
pub(super) async fn until_stored(
    cp: &ControlPlane,
    expected: u64,
    deadline: Instant,
) -> Result<()> {
    loop {
        if cp.stored_count().await? >= expected {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "control plane stored {} of {expected} events after 300s",
                cp.stored_count().await?
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A metric of one scrape; NaN when absent, so a missing figure shows.
fn get(metrics: &str, name: &str) -> f64 {
    metric_value(metrics, name, None).unwrap_or(f64::NAN)
}

#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub concurrency: usize,
    pub events_per_request: usize,
    pub result: LoadResult,
    pub baseline_rps: Option<f64>,
    /// Cores (user, system) the agent used during the row (warm-up included).
    pub agent_cores: Option<[f64; 2]>,
    /// Cores this process used: the load generator, plus the baseline server
    /// in the baseline rows.
    pub bench_cores: f64,
    /// The agent's group commits during the row (warm-up included): flushes
    /// per second and calls answered per flush, from
    /// `nudge_agent_outbox_flush_envelopes` (count = flushes, sum =
    /// envelopes). `None` for the baseline and the unsafe mode's rows.
    pub flushes: Option<Flushes>,
}

#[derive(Debug, Clone, Copy)]
pub struct Flushes {
    pub per_sec: f64,
    pub calls_per_flush: f64,
}

impl Flushes {
    /// From two scrapes of the agent's metrics `secs` apart.
    fn between(before: &str, after: &str, secs: f64, events_per_request: usize) -> Option<Self> {
        let delta = |name: &str| {
            Some(metric_value(after, name, None)? - metric_value(before, name, None).unwrap_or(0.0))
        };
        let flushes = delta("nudge_agent_outbox_flush_envelopes_count")?;
        let envelopes = delta("nudge_agent_outbox_flush_envelopes_sum")?;
        if flushes <= 0.0 {
            return None;
        }
        Some(Flushes {
            per_sec: flushes / secs,
            calls_per_flush: envelopes / flushes / events_per_request as f64,
        })
    }
}

impl Row {
    pub fn to_json(&self) -> Value {
        json!({
            "scenario": self.scenario,
            "concurrency": self.concurrency,
            "events_per_request": self.events_per_request,
            "requests_per_sec": self.result.per_sec(),
            "events_per_sec": self.result.per_sec() * self.events_per_request as f64,
            "p50_ms": self.result.percentile_ms(50.0),
            "p99_ms": self.result.percentile_ms(99.0),
            "max_ms": self.result.percentile_ms(100.0),
            "requests": self.result.ok,
            "errors": self.result.errors,
            "error_statuses": self.result.error_statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            "transport_errors": self.result.transport_errors,
            "ratio_to_baseline": self.baseline_rps.map(|b| self.result.per_sec() / b),
            "agent_cpu_cores_user": self.agent_cores.map(|c| c[0]),
            "agent_cpu_cores_system": self.agent_cores.map(|c| c[1]),
            "bench_cpu_cores": self.bench_cores,
            "agent_flushes_per_sec": self.flushes.map(|f| f.per_sec),
            "agent_calls_per_flush": self.flushes.map(|f| f.calls_per_flush),
        })
    }
}

fn timed(options: &Options) -> Stop {
    Stop::Timed {
        warmup: options.warmup,
        measure: options.duration,
    }
}

pub async fn scenario_baseline(options: &Options, body: &Bytes) -> Result<Vec<Row>> {
    let (addr, thread, stop) = start_baseline()?;
    let target = Target {
        addr,
        path: "/v1/track",
        body: body.clone(),
    };
    let mut rows = Vec::new();
    for &c in &options.concurrency {
        eprintln!("  baseline c={c}");
        let (result, cores) =
            with_cpu(&["self".into()], run_load(&target, c, timed(options))).await;
        rows.push(Row {
            scenario: "baseline (200, no work)".into(),
            concurrency: c,
            events_per_request: 1,
            result,
            baseline_rps: None,
            agent_cores: None,
            bench_cores: cores[0][0] + cores[0][1],
            flushes: None,
        });
    }
    let _ = stop.send(());
    let _ = thread.join();
    Ok(rows)
}

/// One row against a fresh agent with no control plane; returns the row and
/// the agent's VmHWM.
pub async fn agent_row(
    env: &Env,
    label: &str,
    durability: &str,
    path: &'static str,
    body: &Bytes,
    events_per_request: usize,
    concurrency: usize,
) -> Result<(Row, u64)> {
    eprintln!("  {label} c={concurrency}");
    // Nothing listens on the control-plane port: the shipper backs off.
    let nowhere = format!("http://{}", free_loopback());
    let mut agent = Agent::new(
        &env.setup,
        &nowhere,
        &[("NUDGE_AGENT_DURABILITY", durability)],
    )?;
    agent.start().await?;
    let target = Target {
        addr: agent.intake,
        path,
        body: body.clone(),
    };
    let pids = ["self".to_string(), agent.process.pid().to_string()];
    let before = agent.metrics().await?;
    let started = Instant::now();
    let (result, cores) =
        with_cpu(&pids, run_load(&target, concurrency, timed(&env.options))).await;
    let secs = started.elapsed().as_secs_f64();
    let flushes = Flushes::between(&before, &agent.metrics().await?, secs, events_per_request);
    let hwm = memory(agent.process.pid()).1;
    let row = Row {
        scenario: label.into(),
        concurrency,
        events_per_request,
        result,
        baseline_rps: None,
        agent_cores: Some(cores[1]),
        bench_cores: cores[0][0] + cores[0][1],
        flushes,
    };
    Ok((row, hwm))
}

#[derive(Debug, Default)]
pub struct Memory {
    pub idle: u64,
    pub peak_sampled: u64,
    pub hwm: u64,
    pub after_drain: u64,
}

#[derive(Debug, Default)]
pub struct EndToEnd {
    pub events: u64,
    pub send_secs: f64,
    pub stored_secs: f64,
    pub drained_secs: f64,
    pub intake_errors: u64,
    pub agent: Memory,
    pub control_plane: Memory,
    pub outbox_peak_events: f64,
    /// CPU cores used by the agent and the control plane from the first
    /// request until the outbox was empty.
    pub cores: [f64; 2],
}

pub async fn scenario_end_to_end(env: &Env, batch: &Bytes) -> Result<EndToEnd> {
    let cp = ControlPlane::started(&env.setup).await?;
    let agent = Agent::started(&env.setup, &cp.grpc_url(), &[]).await?;
    let (agent_pid, cp_pid) = (agent.process.pid(), cp.process.pid());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut e2e = EndToEnd::default();
    e2e.agent.idle = memory(agent_pid).0;
    e2e.control_plane.idle = memory(cp_pid).0;
    let already = cp.stored_count().await?;

    let requests = (env.options.e2e_events as u64).div_ceil(BATCH_EVENTS as u64);
    let expected = already + requests * BATCH_EVENTS as u64;
    eprintln!(
        "  end to end: {} events in batches of {BATCH_EVENTS}, concurrency 16",
        requests * BATCH_EVENTS as u64
    );
    let sampler = RssSampler::start(vec![agent_pid, cp_pid]);
    let cpu_before = [
        cpu_seconds(&agent_pid.to_string()),
        cpu_seconds(&cp_pid.to_string()),
    ];
    let begin = Instant::now();
    let target = Target {
        addr: agent.intake,
        path: "/v1/batch",
        body: batch.clone(),
    };
    let outbox_peak = Arc::new(AtomicI64::new(0));
    let poll_outbox = tokio::spawn({
        let url = format!("http://{}/metrics", agent.admin);
        let peak = Arc::clone(&outbox_peak);
        async move {
            let client = http::client();
            loop {
                if let Ok(metrics) = http::get_text(&client, &url, None).await {
                    let events = get(&metrics, "nudge_agent_outbox_events");
                    peak.fetch_max(events as i64, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let load = run_load(&target, 16, Stop::Count(requests)).await;
    e2e.send_secs = begin.elapsed().as_secs_f64();
    e2e.intake_errors = load.errors + load.transport_errors;
    e2e.events = requests * BATCH_EVENTS as u64;

    let deadline = Instant::now() + Duration::from_secs(300);
    until_stored(&cp, expected, deadline).await?;
    e2e.stored_secs = begin.elapsed().as_secs_f64();
    until_outbox_empty(&agent, deadline, Duration::from_millis(25)).await?;
    e2e.drained_secs = begin.elapsed().as_secs_f64();
    poll_outbox.abort();
    e2e.outbox_peak_events = outbox_peak.load(Ordering::Relaxed) as f64;
    let wall = begin.elapsed().as_secs_f64();
    let cpu_after = [
        cpu_seconds(&agent_pid.to_string()),
        cpu_seconds(&cp_pid.to_string()),
    ];
    for i in 0..2 {
        e2e.cores[i] =
            (cpu_after[i][0] + cpu_after[i][1] - cpu_before[i][0] - cpu_before[i][1]) / wall;
    }
    let peaks = sampler.finish().await;
    e2e.agent.peak_sampled = peaks[0];
    e2e.control_plane.peak_sampled = peaks[1];
    e2e.agent.hwm = memory(agent_pid).1;
    e2e.control_plane.hwm = memory(cp_pid).1;
    // Let caches settle and allocators give memory back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    e2e.agent.after_drain = memory(agent_pid).0;
    e2e.control_plane.after_drain = memory(cp_pid).0;
    Ok(e2e)
}

#[derive(Debug, Default)]
pub struct Disk {
    pub events: u64,
    pub json_bytes_per_event: f64,
    pub floor_disk: f64,
    pub backlog_disk: f64,
    pub backlog_encoded: f64,
    pub backlog_events: f64,
    pub backlog_segments: f64,
    pub after_drain_disk: f64,
    pub after_drain_segments: f64,
    pub drain_secs: f64,
}

pub async fn scenario_disk(env: &Env, batch: &Bytes) -> Result<Disk> {
    // Not started until the backlog is written.
    let mut cp = ControlPlane::new(&env.setup)?;
    // Shipping resumes within a second of the control plane's start.
    let mut agent = Agent::new(
        &env.setup,
        &cp.grpc_url(),
        &[
            ("NUDGE_AGENT_RETRY_INITIAL", "100ms"),
            ("NUDGE_AGENT_RETRY_MAX", "1s"),
        ],
    )?;
    agent.start().await?;
    let mut disk = Disk {
        floor_disk: get(&agent.metrics().await?, "nudge_agent_outbox_disk_bytes"),
        ..Disk::default()
    };
    let requests = (env.options.disk_events as u64).div_ceil(BATCH_EVENTS as u64);
    disk.events = requests * BATCH_EVENTS as u64;
    disk.json_bytes_per_event = batch.len() as f64 / BATCH_EVENTS as f64;
    eprintln!(
        "  outbox on disk: {} events with the control plane down",
        disk.events
    );
    let target = Target {
        addr: agent.intake,
        path: "/v1/batch",
        body: batch.clone(),
    };
    let load = run_load(&target, 4, Stop::Count(requests)).await;
    if load.errors + load.transport_errors > 0 {
        eprintln!(
            "  ({} refused/failed requests were retried)",
            load.errors + load.transport_errors
        );
    }
    let m = agent.metrics().await?;
    disk.backlog_disk = get(&m, "nudge_agent_outbox_disk_bytes");
    disk.backlog_encoded = get(&m, "nudge_agent_outbox_bytes");
    disk.backlog_events = get(&m, "nudge_agent_outbox_events");
    disk.backlog_segments = get(&m, "nudge_agent_outbox_segments");

    cp.start().await?;
    let begin = Instant::now();
    let deadline = begin + Duration::from_secs(300);
    until_outbox_empty(&agent, deadline, Duration::from_millis(50)).await?;
    disk.drain_secs = begin.elapsed().as_secs_f64();
    // Segment retirement follows the last delete; give it a moment.
    let mut last = f64::NAN;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let m = agent.metrics().await?;
        let now = get(&m, "nudge_agent_outbox_disk_bytes");
        disk.after_drain_segments = get(&m, "nudge_agent_outbox_segments");
        if now == last {
            break;
        }
        last = now;
    }
    disk.after_drain_disk = last;
    Ok(disk)
}
