//! Scenario 7, notification dispatch (issue 3, "Benchmark"): how many
//! notifications per second the control plane dispatches on each channel to
//! local peers, their queue latency and the control plane's memory.
//!
//! One control plane runs an engine TOML (`NUDGE_CP_CONFIG`) with three
//! types, each on one channel: `bench_in_app` → in-app, `bench_webhook` → a
//! webhook receiver in this process (axum on 127.0.0.1, answers 200),
//! `bench_email` → email to a local SMTP server (`smtp_server.py`, aiosmtpd,
//! run by `.venv/bin/python` or `NUDGE_BENCH_PYTHON`). An agent ships to it.
//! A few users are identified (with an `email` trait), then, one channel at
//! a time, N single `/v1/notify` calls (each with its own `messageId`) go to
//! the agent from a fixed number of concurrent workers, and the control
//! plane's `/metrics` is polled until `nudge_cp_deliveries_total{channel,
//! outcome="sent"}` has grown by N.
//!
//! Promises: notifications/s is N over the wall time from the first notify
//! sent to the N-th delivery sent (so it includes the agent's intake and
//! shipping, and the poll's 20 ms resolution); the queue latency (due →
//! accepted by the peer) is the control plane's own histogram, its p50 and
//! p99 *estimated* from the buckets (linear within a bucket, as Prometheus'
//! `histogram_quantile`), over this channel's deliveries only; a channel
//! that does not deliver N within 300 s fails the scenario. Without the
//! Python SMTP peer the email row is skipped, with the reason printed.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use super::procstat::{cpu_seconds, memory};
use super::{Env, Result};
use crate::peer::start_python_peer;
use crate::ports::free_port;
use crate::{Agent, ControlPlane, http};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const LATENCY: &str = "nudge_cp_delivery_latency_seconds";
pub(super) const DELIVERIES: &str = "nudge_cp_deliveries_total";
/// How often the control plane's `/metrics` is read while waiting.
const POLL: Duration = Duration::from_millis(20);
const CHANNEL_LIMIT: Duration = Duration::from_secs(300);
/// The engine's `[concurrency]` and the email pool, printed with the table.
/// In-app's default (`IN_APP_CONCURRENCY` in the dispatcher); the others
/// are the default of every other channel.
const IN_APP_SLOTS: usize = 256;
const WEBHOOK_SLOTS: usize = 16;
const EMAIL_SLOTS: usize = 8;

// ---------------------------------------------------------------------------
// Peers

/// `smtp_server.py` on a loopback port, saving messages to `dir`. Killed on
/// drop; its stdin stays open (it exits when stdin closes).
struct SmtpPeer {
    child: Child,
    dir: TempDir,
    port: u16,
    /// What runs it, for the report.
    describe: String,
}

impl SmtpPeer {
    fn start(env: &Env) -> Result<Self> {
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default();
        let python = std::env::var_os("NUDGE_BENCH_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace.join(".venv/bin/python"));
        let script = workspace.join("control-plane/tests/peers/smtp_server.py");
        if !python.exists() || !script.exists() {
            return Err(format!(
                "{} or {} not found (scripts/test installs aiosmtpd into .venv; or set NUDGE_BENCH_PYTHON)",
                python.display(),
                script.display()
            )
            .into());
        }
        let version = Command::new(&python)
            .args(["-c", "import aiosmtpd; print(aiosmtpd.__version__)"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .ok_or_else(|| format!("{} has no aiosmtpd", python.display()))?;
        let dir = env.setup.data_dir("smtp")?;
        let port = free_port();
        let port_text = port.to_string();
        let (child, line) = start_python_peer(
            &python,
            &script,
            [
                OsStr::new("--port"),
                OsStr::new(&port_text),
                OsStr::new("--dir"),
                dir.path().as_os_str(),
            ],
        )?;
        let peer = SmtpPeer {
            child,
            dir,
            port,
            describe: format!(
                "aiosmtpd {version} (smtp_server.py, {}), saving each mail to a file",
                python.display()
            ),
        };
        if line != "ready" {
            return Err(format!("smtp_server.py did not start (said {line:?})").into());
        }
        Ok(peer)
    }

    /// Messages saved so far.
    fn mails(&self) -> u64 {
        std::fs::read_dir(self.dir.path()).map_or(0, |entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
                .count() as u64
        })
    }
}

impl Drop for SmtpPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An axum server on 127.0.0.1 in this process that counts requests and
/// answers 200 (no signature check: that is the tests' job).
pub struct WebhookPeer {
    pub(super) url: String,
    hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookPeer {
    /// Requests received so far.
    pub(super) fn received(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub(super) async fn start() -> Result<Self> {
        let hits = Arc::new(AtomicU64::new(0));
        let app = axum::Router::new()
            .route(
                "/hook",
                axum::routing::post(
                    |axum::extract::State(hits): axum::extract::State<Arc<AtomicU64>>,
                     _body: bytes::Bytes| async move {
                        hits.fetch_add(1, Ordering::Relaxed);
                        "ok"
                    },
                ),
            )
            .with_state(Arc::clone(&hits));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(WebhookPeer { url, hits, task })
    }
}

impl Drop for WebhookPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------
// The control plane's metrics

/// The labels of a sample line of `name` (exact name), and its value.
fn samples<'a>(
    text: &'a str,
    name: &'a str,
) -> impl Iterator<Item = (Vec<(&'a str, &'a str)>, f64)> {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        let (labels, value) = match rest.chars().next()? {
            '{' => {
                let end = rest.find('}')?;
                (&rest[1..end], &rest[end + 1..])
            }
            ' ' => ("", rest),
            _ => return None,
        };
        let labels = labels
            .split(',')
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                Some((k.trim(), v.trim().trim_matches('"')))
            })
            .collect();
        let value = value.split_whitespace().next()?.parse().ok()?;
        Some((labels, value))
    })
}

/// Sum of the samples of `name` carrying every label of `want`.
pub(super) fn sum(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    samples(text, name)
        .filter(|(labels, _)| want.iter().all(|w| labels.contains(w)))
        .map(|(_, v)| v)
        .sum()
}

/// The largest sample of `name` (0 without one).
pub(super) fn max(text: &str, name: &str) -> f64 {
    samples(text, name).map(|(_, v)| v).fold(0.0, f64::max)
}

/// Deliveries of `channel` by outcome.
fn outcomes(text: &str, channel: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (labels, value) in samples(text, DELIVERIES) {
        if !labels.contains(&("channel", channel)) {
            continue;
        }
        if let Some((_, outcome)) = labels.iter().find(|(k, _)| *k == "outcome") {
            *out.entry((*outcome).to_owned()).or_insert(0.0) += value;
        }
    }
    out
}

/// The latency histogram of `channel`: (upper bound, cumulative count),
/// sorted, `+Inf` last.
fn buckets(text: &str, channel: &str) -> Vec<(f64, f64)> {
    let name = format!("{LATENCY}_bucket");
    let mut out: Vec<(f64, f64)> = samples(text, &name)
        .filter(|(labels, _)| labels.contains(&("channel", channel)))
        .filter_map(|(labels, v)| {
            let le = labels.iter().find(|(k, _)| *k == "le")?.1;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, v))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The `q` quantile (0..1) of the observations between two scrapes of the
/// same histogram, estimated as Prometheus' `histogram_quantile` does:
/// linear within the bucket it falls in; the highest finite bound when it
/// falls in `+Inf`. NaN without observations.
fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> f64 {
    let earlier = |le: f64| {
        before
            .iter()
            .find(|(b, _)| *b == le)
            .map_or(0.0, |(_, c)| *c)
    };
    let cumulative: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, c)| (*le, c - earlier(*le)))
        .collect();
    let Some(&(_, total)) = cumulative.last() else {
        return f64::NAN;
    };
    if total <= 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in &cumulative {
        if count >= rank {
            if le.is_infinite() {
                return lower.0;
            }
            let inside = count - lower.1;
            let fraction = if inside > 0.0 {
                (rank - lower.1) / inside
            } else {
                1.0
            };
            return lower.0 + (le - lower.0) * fraction;
        }
        lower = (le, count);
    }
    lower.0
}

// ---------------------------------------------------------------------------
// The scenario

#[derive(Debug, Clone, Default)]
pub struct ChannelRow {
    pub channel: String,
    pub notifies: u64,
    /// All notifies accepted by the agent.
    pub accepted_secs: f64,
    /// First notify sent → N-th delivery sent.
    pub delivered_secs: f64,
    pub queue_p50_s: f64,
    pub queue_p99_s: f64,
    /// Non-`sent` outcomes (`retry`, `failed`, …) seen meanwhile.
    pub other_outcomes: BTreeMap<String, f64>,
    pub intake_refusals: u64,
    /// What the peer received (webhook requests, saved mails); None for in-app.
    pub peer_received: Option<u64>,
    pub cp_cores: f64,
    /// CPU of the peer: this process for webhooks (also the load
    /// generator), the Python SMTP server for email.
    pub peer_cores: Option<f64>,
    pub cp_rss: u64,
    pub cp_hwm: u64,
}

impl ChannelRow {
    fn per_sec(&self) -> f64 {
        self.notifies as f64 / self.delivered_secs
    }

    fn to_json(&self) -> Value {
        json!({
            "channel": self.channel,
            "notifies": self.notifies,
            "accepted_secs": self.accepted_secs,
            "delivered_secs": self.delivered_secs,
            "notifications_per_sec": self.per_sec(),
            "queue_latency_p50_ms_estimated": self.queue_p50_s * 1e3,
            "queue_latency_p99_ms_estimated": self.queue_p99_s * 1e3,
            "other_outcomes": self.other_outcomes,
            "intake_refusals": self.intake_refusals,
            "peer_received": self.peer_received,
            "cp_cpu_cores": self.cp_cores,
            "peer_cpu_cores": self.peer_cores,
            "cp_vmrss_bytes": self.cp_rss,
            "cp_vmhwm_bytes": self.cp_hwm,
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct NotifyReport {
    pub rows: Vec<ChannelRow>,
    pub workers: usize,
    pub users: usize,
    pub smtp_peer: String,
    pub skipped: Vec<String>,
    pub cp_idle_rss: u64,
}

impl NotifyReport {
    pub fn to_json(&self) -> Value {
        json!({
            "workers": self.workers,
            "users": self.users,
            "concurrency": {"in_app": IN_APP_SLOTS, "webhook": WEBHOOK_SLOTS, "email": EMAIL_SLOTS},
            "smtp_peer": self.smtp_peer,
            "skipped": self.skipped,
            "cp_idle_vmrss_bytes": self.cp_idle_rss,
            "channels": self.rows.iter().map(ChannelRow::to_json).collect::<Vec<_>>(),
        })
    }
}

pub(super) fn engine_toml(smtp_port: u16, webhook_url: &str) -> String {
    let template = |channel: &str| {
        format!(
            r#"
[types.bench_{channel}]
channels = ["{channel}"]
critical = true
frequency = "instant"
{url}
[types.bench_{channel}.templates.fallback]
subject = "Bench notification {{{{ data.n }}}}"
title = "Bench notification {{{{ data.n }}}}"
text = "Hi {{{{ user.name | default('there') }}}}, this is notification {{{{ data.n }}}}."
"#,
            url = if channel == "webhook" {
                format!("webhook_url = \"{webhook_url}\"")
            } else {
                String::new()
            }
        )
    };
    format!(
        r#"
[retry]
initial = "500ms"
max = "5s"
max_attempts = 10

[concurrency]
in_app = {IN_APP_SLOTS}
webhook = {WEBHOOK_SLOTS}
email = {EMAIL_SLOTS}

[channels.email]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
from = "Nudge Bench <bench@example.com>"
pool_max_size = {EMAIL_SLOTS}
timeout = "10s"

[channels.webhook]
secret = "{SECRET}"
allow_private_destinations = true
{in_app}{webhook}{email}"#,
        in_app = template("in_app"),
        webhook = template("webhook"),
        email = template("email"),
    )
}

pub(super) fn user(i: usize) -> String {
    format!("bench-user-{i}")
}

/// Identifies `users` users and waits until the control plane has every
/// profile.
async fn identify(agent: &Agent, cp: &ControlPlane, users: usize) -> Result<()> {
    for i in 0..users {
        let body = json!({
            "userId": user(i),
            "traits": {"email": format!("bench{i}@example.com"), "name": format!("Bench {i}")},
        });
        let reply = agent.post("/v1/identify", &body).await?;
        if !reply.is_success() {
            return Err(format!("identify refused: {reply:?}").into());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..users {
        while cp
            .admin_get(&format!("/v1/admin/users/{}/profile", user(i)))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                return Err(format!("no profile for {} after 60s", user(i)).into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Sends the notifies numbered `ids` of `bench_<channel>` (each number its
/// own `messageId`, so callers sharing a database use disjoint ranges) from
/// `workers` concurrent workers (one pooled keep-alive connection each),
/// retrying refusals; returns the refusals.
pub(super) async fn send_notifies(
    agent: &Agent,
    channel: &str,
    ids: Range<u64>,
    workers: usize,
    users: usize,
) -> u64 {
    let next = Arc::new(AtomicU64::new(ids.start));
    let end = ids.end;
    let refusals = Arc::new(AtomicU64::new(0));
    let url = agent.url("/v1/notify");
    let client = http::client();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (next, refusals) = (Arc::clone(&next), Arc::clone(&refusals));
            let (url, client, channel) = (url.clone(), client.clone(), channel.to_owned());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        return;
                    }
                    let body = json!({
                        "userId": user(i as usize % users),
                        "type": format!("bench_{channel}"),
                        "data": {"n": i},
                        "messageId": format!("bench-{channel}-{i}"),
                    });
                    loop {
                        match http::post_json(&client, &url, &body).await {
                            Ok(reply) if reply.is_success() => break,
                            _ => {
                                refusals.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    refusals.load(Ordering::Relaxed)
}

/// One channel: N notifies, until N deliveries are sent.
async fn run_channel(
    env: &Env,
    agent: &Agent,
    cp: &ControlPlane,
    channel: &str,
    n: u64,
    peer: Option<(&dyn Fn() -> u64, &str)>,
    users: usize,
) -> Result<ChannelRow> {
    let workers = env.options.notify_workers;
    eprintln!("  {channel}: {n} notifies, {workers} workers");
    let before = cp.metrics().await?;
    let sent_before = sum(
        &before,
        DELIVERIES,
        &[("channel", channel), ("outcome", "sent")],
    );
    let outcomes_before = outcomes(&before, channel);
    let buckets_before = buckets(&before, channel);
    let cp_pid = cp.process.pid().to_string();
    let peer_pid = peer.map(|(_, pid)| pid);
    let cpu = |pid: &str| {
        let [user, system] = cpu_seconds(pid);
        user + system
    };
    let cp_cpu_before = cpu(&cp_pid);
    let peer_cpu_before = peer_pid.map(cpu);

    let begin = Instant::now();
    let sending = send_notifies(agent, channel, 0..n, workers, users);
    let (refusals, accepted_secs) = {
        let refusals = sending.await;
        (refusals, begin.elapsed().as_secs_f64())
    };
    let deadline = begin + CHANNEL_LIMIT;
    let after = loop {
        let text = cp.metrics().await?;
        let sent = sum(
            &text,
            DELIVERIES,
            &[("channel", channel), ("outcome", "sent")],
        );
        if sent - sent_before >= n as f64 {
            break text;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{channel}: {} of {n} deliveries sent after {}s (outcomes {:?})",
                sent - sent_before,
                CHANNEL_LIMIT.as_secs(),
                outcomes(&text, channel)
            )
            .into());
        }
        tokio::time::sleep(POLL).await;
    };
    let delivered_secs = begin.elapsed().as_secs_f64();
    let cp_cores = (cpu(&cp_pid) - cp_cpu_before) / delivered_secs;
    let peer_cores = peer_pid
        .zip(peer_cpu_before)
        .map(|(pid, b)| (cpu(pid) - b) / delivered_secs);
    let buckets_after = buckets(&after, channel);
    let mut other_outcomes = outcomes(&after, channel);
    other_outcomes.remove("sent");
    for (outcome, count) in &mut other_outcomes {
        *count -= outcomes_before.get(outcome).copied().unwrap_or(0.0);
    }
    other_outcomes.retain(|_, c| *c > 0.0);
    let (cp_rss, cp_hwm) = memory(cp.process.pid());
    Ok(ChannelRow {
        channel: channel.to_owned(),
        notifies: n,
        accepted_secs,
        delivered_secs,
        queue_p50_s: quantile(&buckets_before, &buckets_after, 0.50),
        queue_p99_s: quantile(&buckets_before, &buckets_after, 0.99),
        other_outcomes,
        intake_refusals: refusals,
        peer_received: peer.map(|(count, _)| count()),
        cp_cores,
        peer_cores,
        cp_rss,
        cp_hwm,
    })
}

pub async fn scenario_notify(env: &Env) -> Result<NotifyReport> {
    let options = &env.options;
    let users = options.notify_users;
    let mut report = NotifyReport {
        workers: options.notify_workers,
        users,
        ..NotifyReport::default()
    };
    let smtp = match SmtpPeer::start(env) {
        Ok(peer) => {
            report.smtp_peer = peer.describe.clone();
            Some(peer)
        }
        Err(error) => {
            eprintln!("  email skipped: {error}");
            report.skipped.push(format!("email: {error}"));
            None
        }
    };
    let webhook = WebhookPeer::start().await?;
    // Nothing listens there when the SMTP peer is missing; no email is sent.
    let smtp_port = smtp.as_ref().map_or_else(free_port, |s| s.port);
    let config = env.setup.data_dir("engine")?;
    let path = config.path().join("nudge.toml");
    std::fs::write(&path, engine_toml(smtp_port, &webhook.url))?;
    let path_text = path.display().to_string();
    let mut cp = ControlPlane::new(&env.setup)?;
    cp = cp.with_env([("NUDGE_CP_CONFIG", path_text.as_str())]);
    cp.start().await?;
    let agent = Agent::started(&env.setup, &cp.grpc_url(), &[]).await?;
    identify(&agent, &cp, users).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    report.cp_idle_rss = memory(cp.process.pid()).0;

    let self_pid = std::process::id().to_string();
    let hits_now = || webhook.hits.load(Ordering::Relaxed);
    let hits: &dyn Fn() -> u64 = &hits_now;
    report.rows.push(
        run_channel(
            env,
            &agent,
            &cp,
            "in_app",
            options.notify_count,
            None,
            users,
        )
        .await?,
    );
    report.rows.push(
        run_channel(
            env,
            &agent,
            &cp,
            "webhook",
            options.notify_count,
            Some((hits, &self_pid)),
            users,
        )
        .await?,
    );
    if let Some(smtp) = &smtp {
        let mails_now = || smtp.mails();
        let mails: &dyn Fn() -> u64 = &mails_now;
        let smtp_pid = smtp.child.id().to_string();
        report.rows.push(
            run_channel(
                env,
                &agent,
                &cp,
                "email",
                options.notify_email_count,
                Some((mails, &smtp_pid)),
                users,
            )
            .await?,
        );
    }
    Ok(report)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn ms(seconds: f64) -> String {
    if seconds.is_nan() {
        "-".into()
    } else {
        format!("{:.1}", seconds * 1e3)
    }
}

pub fn render(report: &NotifyReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "notification dispatch: single /v1/notify calls ({} workers, {} identified users) agent -> control plane -> peer, one channel at a time",
        report.workers, report.users
    );
    let _ = writeln!(
        out,
        "  engine: one type per channel, critical, instant; [concurrency] in_app {IN_APP_SLOTS}, webhook {WEBHOOK_SLOTS}, email {EMAIL_SLOTS} (SMTP pool {EMAIL_SLOTS})"
    );
    let _ = writeln!(
        out,
        "  peers: webhook = axum in this process on 127.0.0.1, answers 200; email = {}",
        if report.smtp_peer.is_empty() {
            "-"
        } else {
            report.smtp_peer.as_str()
        }
    );
    let _ = writeln!(
        out,
        "  control plane VmRSS idle (users identified): {}",
        mib(report.cp_idle_rss)
    );
    let _ = writeln!(
        out,
        "{:<8} {:>6} {:>9} {:>10} {:>8} {:>9} {:>9} {:>6} {:>9} {:>5} {:>5} {:>10} {:>10}",
        "channel",
        "N",
        "accept s",
        "deliver s",
        "notif/s",
        "q p50 ms",
        "q p99 ms",
        "other",
        "peer got",
        "cp",
        "peer",
        "cp VmRSS",
        "cp VmHWM"
    );
    for r in &report.rows {
        // An empty float sum is -0.0.
        let other = r.other_outcomes.values().sum::<f64>().max(0.0) as u64;
        let _ = writeln!(
            out,
            "{:<8} {:>6} {:>9.2} {:>10.2} {:>8.0} {:>9} {:>9} {:>6} {:>9} {:>5.2} {:>5} {:>10} {:>10}",
            r.channel,
            r.notifies,
            r.accepted_secs,
            r.delivered_secs,
            r.per_sec(),
            ms(r.queue_p50_s),
            ms(r.queue_p99_s),
            other,
            r.peer_received
                .map_or_else(|| "-".into(), |n| n.to_string()),
            r.cp_cores,
            r.peer_cores
                .map_or_else(|| "-".into(), |c| format!("{c:.2}")),
            mib(r.cp_rss),
            mib(r.cp_hwm)
        );
    }
    for r in report.rows.iter().filter(|r| !r.other_outcomes.is_empty()) {
        let _ = writeln!(
            out,
            "  {} other outcomes: {:?}",
            r.channel, r.other_outcomes
        );
    }
    for r in report.rows.iter().filter(|r| r.intake_refusals > 0) {
        let _ = writeln!(
            out,
            "  {}: {} notifies refused by the agent and sent again",
            r.channel, r.intake_refusals
        );
    }
    for skipped in &report.skipped {
        let _ = writeln!(out, "  skipped {skipped}");
    }
    let _ = writeln!(
        out,
        "(notif/s = N / (first notify sent -> N-th `sent` in nudge_cp_deliveries_total, polled every {} ms); accept s = all notifies acknowledged by the agent;",
        POLL.as_millis()
    );
    let _ = writeln!(
        out,
        " q p50/p99 = queue latency (due -> accepted by the peer) ESTIMATED from nudge_cp_delivery_latency_seconds buckets (5,10,25,50,100,250,500 ms, 1 s, …; linear within a bucket);"
    );
    let _ = writeln!(
        out,
        " other = non-sent delivery outcomes (retry, failed, …); cp/peer = CPU cores used (webhook peer = this whole process, load generator included); VmHWM is since the control plane's start, so cumulative over the rows)"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::{buckets, quantile, sum};

    const TEXT: &str = "\
nudge_cp_deliveries_total{channel=\"email\",outcome=\"sent\"} 7
nudge_cp_deliveries_total{channel=\"email\",outcome=\"retry\"} 1
nudge_cp_deliveries_total{channel=\"webhook\",outcome=\"sent\"} 3
nudge_cp_delivery_latency_seconds_bucket{channel=\"email\",le=\"0.01\"} 0
nudge_cp_delivery_latency_seconds_bucket{channel=\"email\",le=\"0.1\"} 5
nudge_cp_delivery_latency_seconds_bucket{channel=\"email\",le=\"1\"} 10
nudge_cp_delivery_latency_seconds_bucket{channel=\"email\",le=\"+Inf\"} 10
nudge_cp_delivery_latency_seconds_sum{channel=\"email\"} 2
";

    #[test]
    fn sums_by_labels_and_estimates_quantiles_from_buckets() {
        assert_eq!(
            sum(
                TEXT,
                "nudge_cp_deliveries_total",
                &[("channel", "email"), ("outcome", "sent")]
            ),
            7.0
        );
        assert_eq!(
            sum(TEXT, "nudge_cp_deliveries_total", &[("outcome", "sent")]),
            10.0
        );
        let after = buckets(TEXT, "email");
        assert_eq!(after.len(), 4);
        // Rank 5 of 10 ends the (0.01, 0.1] bucket.
        assert!((quantile(&[], &after, 0.5) - 0.1).abs() < 1e-9);
        // Rank 9.9: 4.9 of the 5 in (0.1, 1].
        assert!((quantile(&[], &after, 0.99) - (0.1 + 0.9 * 4.9 / 5.0)).abs() < 1e-9);
        // Only what happened since `before`: the 5 in (0.1, 1].
        let before = vec![(0.01, 0.0), (0.1, 5.0), (1.0, 5.0), (f64::INFINITY, 5.0)];
        assert!((quantile(&before, &after, 0.5) - 0.55).abs() < 1e-9);
        assert!(quantile(&after, &after, 0.5).is_nan());
    }
}
