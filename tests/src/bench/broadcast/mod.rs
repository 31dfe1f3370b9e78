//! Section 11, broadcasts (issue 16, "Benchmark"): how long the control
//! plane takes to plan a broadcast to a topic of `--broadcast-users`
//! users (100,000) whose preferences and quiet hours apply, and how fast
//! their in-app deliveries go out; against the same notifications sent
//! one per user through Ingest, in the same run, on each `--database`
//! engine.
//!
//! One control plane (release build, a fresh database) runs an engine TOML
//! with one type, `announcement`: in-app, not critical, instant, so the
//! users' choices apply. Seeding, timed apart ([`seed`]): every user is
//! subscribed to one topic over the admin HTTP API, one in ten has
//! switched the type's in-app channel off, two in ten have quiet hours
//! (UTC) from an hour ago to three hours ahead. Then two phases, each with
//! the control plane's `/metrics` polled every [`POLL`]:
//!
//! 1. **broadcast**: one `POST /v1/admin/broadcasts` to the topic.
//!    *Planned* is create → `GET /v1/admin/broadcasts/{id}` says `done`
//!    (every recipient's notification created and its deliveries queued).
//! 2. **baseline**: `--broadcast-baseline` users (all, by default) get the
//!    same notification as one `notify` envelope each, pushed to
//!    `nudge.v1.Ingest/Push` in batches of 500 by 8 clients, as a fleet of
//!    agents would. *Planned* is first push →
//!    `nudge_cp_notifications_created_total{trigger="notify"}` has grown by
//!    N (the page's deliveries are queued in the same pass, a commit later).
//!
//! For both: *in-app/s* is the in-app deliveries expected (users neither
//! opted out nor in quiet hours) over start → the last of them counted
//! `sent` in `nudge_cp_deliveries_total{channel="in_app"}`, which is also
//! the latency to the last delivery; the queue latency p50/p99 (due →
//! sent) is *estimated* from `nudge_cp_delivery_latency_seconds`'s buckets
//! as the `notify` section does; CPU is the control plane's (and the
//! PostgreSQL cluster's, with its backends); peak RSS is VmRSS sampled
//! every 50 ms during the phase, VmHWM is since the start (so cumulative).
//! The broadcast runs first, on the freshly seeded database; the baseline
//! second, with the broadcast's notifications stored.
//!
//! Promises: figures, never assertions on speed. Correctness is checked
//! and printed, never fails the run ([`Check`]): recipients, notifications
//! and users scanned equal the users subscribed; exactly the expected
//! in-app deliveries were sent (none more a second later); the queued
//! in-app deliveries are the quiet-hours users' (the queue-depth gauge);
//! and for a sample of each group, through the admin API: an opted-out
//! user's broadcast notification has no in-app delivery, a quiet-hours
//! user's is queued until their window ends, the others' was sent. A phase
//! that has not planned and delivered within [`PHASE_LIMIT`] fails the
//! section.

pub mod report;
pub mod seed;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::notify::{DELIVERIES, sum};
use super::procstat::{RssSampler, cpu_seconds, memory, tree_cpu_seconds};
use super::storage::Backing;
use super::{Env, Result};
use crate::ControlPlane;
use report::{BroadcastReport, Check, Phase};
use seed::{Kind, TOPIC};

/// How often `/metrics` (and the broadcast) is read while waiting.
const POLL: Duration = Duration::from_millis(50);
/// Longest a phase may take to plan and deliver everything.
const PHASE_LIMIT: Duration = Duration::from_secs(1800);
/// Users of each group whose notification is looked at.
const SAMPLE: usize = 100;
const CREATED: &str = "nudge_cp_notifications_created_total";
const LATENCY_BUCKET: &str = "nudge_cp_delivery_latency_seconds_bucket";
const QUEUE_DEPTH: &str = "nudge_cp_delivery_queue_depth";
/// The bounds of the control plane's delivery latency histogram
/// (`delivery::metrics`), as Prometheus prints them.
const LATENCY_BOUNDS: [&str; 18] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60",
    "300", "900", "3600", "21600", "+Inf",
];

/// The admin HTTP API without the harness's contract check: the bench
/// only measures, and its many seeding calls should cost the client as
/// little as possible.
#[derive(Clone)]
pub struct Admin {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Admin {
    fn new(cp: &ControlPlane, token: &str) -> Admin {
        Admin {
            client: crate::http::client(),
            base: format!("http://{}", cp.http),
            token: token.to_owned(),
        }
    }

    /// `method path` with a JSON body; the status and the answer (`null`
    /// when not JSON).
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let reply = request
            .send()
            .await
            .map_err(|error| format!("{method} {path}: {error}"))?;
        let status = reply.status().as_u16();
        let text = reply.text().await.unwrap_or_default();
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// `GET path`, which must answer 2xx.
    async fn get(&self, path: &str) -> Result<Value, String> {
        match self.send(reqwest::Method::GET, path, None).await? {
            (200..=299, value) => Ok(value),
            (status, value) => Err(format!("GET {path}: {status}: {value}")),
        }
    }

    /// `PUT path` until it answers 2xx, retrying a 5xx or a failed
    /// connection up to 10 times; returns the retries.
    async fn put_until_ok(&self, path: &str, body: &Value) -> Result<u64, String> {
        let mut retries = 0;
        loop {
            let error = match self.send(reqwest::Method::PUT, path, Some(body)).await {
                Ok((200..=299, _)) => return Ok(retries),
                Ok((status, value)) if status >= 500 => format!("{status}: {value}"),
                Ok((status, value)) => return Err(format!("PUT {path}: {status}: {value}")),
                Err(error) => error,
            };
            retries += 1;
            if retries > 10 {
                return Err(format!("PUT {path}: {error}"));
            }
            tokio::time::sleep(Duration::from_millis(50 * retries)).await;
        }
    }
}

/// When a phase counts as planned.
enum Planned<'a> {
    /// The broadcast with this id is `done`.
    Broadcast(&'a str),
    /// This many more notifications were created by notifies.
    Notifies(f64),
}

/// What the watch of a phase saw.
struct Watched {
    planned_secs: f64,
    first_sent_secs: Option<f64>,
    last_sent_secs: f64,
    /// The broadcast as `GET` returned it when done (broadcast phase).
    broadcast: Value,
    before: String,
    after: String,
}

fn in_app_sent(text: &str) -> f64 {
    sum(
        text,
        DELIVERIES,
        &[("channel", "in_app"), ("outcome", "sent")],
    )
}

fn created(text: &str, trigger: &str) -> f64 {
    sum(text, CREATED, &[("trigger", trigger)])
}

/// The in-app latency histogram as (upper bound, cumulative count).
fn buckets(text: &str) -> Vec<(f64, f64)> {
    LATENCY_BOUNDS
        .iter()
        .map(|le| {
            let bound = le.parse().unwrap_or(f64::INFINITY);
            (
                bound,
                sum(text, LATENCY_BUCKET, &[("channel", "in_app"), ("le", le)]),
            )
        })
        .collect()
}

/// The `q` quantile of the observations between two scrapes, linear within
/// its bucket (Prometheus' `histogram_quantile`); NaN without any.
fn quantile(before: &str, after: &str, q: f64) -> f64 {
    let cumulative: Vec<(f64, f64)> = buckets(after)
        .into_iter()
        .zip(buckets(before))
        .map(|((bound, a), (_, b))| (bound, a - b))
        .collect();
    let total = cumulative.last().map_or(0.0, |(_, count)| *count);
    if total <= 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for (bound, count) in cumulative {
        if count >= rank {
            if bound.is_infinite() {
                return lower.0;
            }
            let inside = count - lower.1;
            let fraction = if inside > 0.0 {
                (rank - lower.1) / inside
            } else {
                1.0
            };
            return lower.0 + (bound - lower.0) * fraction;
        }
        lower = (bound, count);
    }
    lower.0
}

/// Polls until the phase is planned and `expected` more in-app
/// deliveries were sent; `begin` is when its work started, `before` the
/// metrics just before.
async fn watch(
    cp: &ControlPlane,
    admin: &Admin,
    begin: Instant,
    before: String,
    planned: Planned<'_>,
    expected: u64,
) -> Result<Watched> {
    let sent_before = in_app_sent(&before);
    let created_before = created(&before, "notify");
    let (mut planned_secs, mut first_sent_secs, mut last_sent_secs) = (None, None, None);
    let mut broadcast = Value::Null;
    loop {
        let text = cp.metrics().await?;
        let at = begin.elapsed().as_secs_f64();
        let sent = in_app_sent(&text) - sent_before;
        if first_sent_secs.is_none() && sent > 0.0 {
            first_sent_secs = Some(at);
        }
        if last_sent_secs.is_none() && sent >= expected as f64 {
            last_sent_secs = Some(at);
        }
        if planned_secs.is_none() {
            let done = match planned {
                Planned::Broadcast(id) => {
                    broadcast = admin.get(&format!("/v1/admin/broadcasts/{id}")).await?;
                    match broadcast["state"].as_str() {
                        Some("done") => true,
                        Some("scheduled" | "running") => false,
                        _ => return Err(format!("broadcast {id} ended as {broadcast}").into()),
                    }
                }
                Planned::Notifies(n) => created(&text, "notify") - created_before >= n,
            };
            if done {
                planned_secs = Some(at);
            }
        }
        if let (Some(planned_secs), Some(last_sent_secs)) = (planned_secs, last_sent_secs) {
            return Ok(Watched {
                planned_secs,
                first_sent_secs,
                last_sent_secs,
                broadcast,
                before,
                after: text,
            });
        }
        if begin.elapsed() > PHASE_LIMIT {
            return Err(format!(
                "not planned and delivered after {} s: planned {planned_secs:?}, {sent} of {expected} in-app deliveries sent, broadcast {broadcast}",
                PHASE_LIMIT.as_secs()
            )
            .into());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The figures of one phase, from its watch and the processes' counters.
struct Meter {
    cp_pid: u32,
    db_pid: Option<u32>,
    cp_cpu: f64,
    db_cpu: f64,
    rss: RssSampler,
}

impl Meter {
    fn start(cp: &ControlPlane, backing: &Backing) -> Meter {
        let cp_pid = cp.process.pid();
        let db_pid = backing.cluster().and_then(|cluster| cluster.server_pid());
        let [user, system] = cpu_seconds(&cp_pid.to_string());
        Meter {
            cp_pid,
            db_pid,
            cp_cpu: user + system,
            db_cpu: db_pid.map_or(0.0, tree_cpu_seconds),
            rss: RssSampler::start(vec![cp_pid]),
        }
    }

    async fn finish(
        self,
        label: &'static str,
        users: u64,
        accepted_secs: f64,
        expected: u64,
        watched: &Watched,
    ) -> Phase {
        let wall = watched.planned_secs.max(watched.last_sent_secs);
        let [user, system] = cpu_seconds(&self.cp_pid.to_string());
        let peak = self.rss.finish().await.first().copied().unwrap_or(0);
        Phase {
            label,
            users,
            accepted_secs,
            planned_secs: watched.planned_secs,
            in_app_expected: expected,
            first_sent_secs: watched.first_sent_secs,
            last_sent_secs: watched.last_sent_secs,
            queue_p50_s: quantile(&watched.before, &watched.after, 0.50),
            queue_p99_s: quantile(&watched.before, &watched.after, 0.99),
            cp_cores: (user + system - self.cp_cpu) / wall,
            db_cores: self
                .db_pid
                .map(|pid| (tree_cpu_seconds(pid) - self.db_cpu) / wall),
            cp_peak_rss: peak,
            cp_hwm: memory(self.cp_pid).1,
        }
    }
}

/// Waits up to 20 s (the dispatcher refreshes the gauge every 5 s) for
/// the queued in-app deliveries to be `want`; returns the last value.
async fn queued_in_app(cp: &ControlPlane, want: u64) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = cp.metrics().await?;
        let queued = sum(
            &text,
            QUEUE_DEPTH,
            &[("channel", "in_app"), ("status", "queued")],
        );
        if queued == want as f64 || Instant::now() > deadline {
            return Ok(queued);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// In-app sent since `before`, a second after the phase: nothing more
/// may come.
async fn settled_sent(cp: &ControlPlane, before: &str) -> Result<f64> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(in_app_sent(&cp.metrics().await?) - in_app_sent(before))
}

/// What the admin API shows for user `i`'s broadcast notification: the
/// problem, if it is not what their group expects.
async fn sample_problem(
    admin: &Admin,
    broadcast_id: &str,
    i: usize,
    quiet_end: &str,
) -> Result<Option<String>> {
    let user = seed::user(i);
    let source = format!("broadcast:{broadcast_id}:{user}");
    let listed = admin
        .get(&format!("/v1/admin/users/{user}/notifications?limit=100"))
        .await?;
    let Some(notification) = listed["notifications"]
        .as_array()
        .and_then(|all| all.iter().find(|n| n["source_event_id"] == source.as_str()))
    else {
        return Ok(Some(format!("{user}: no notification from {source}")));
    };
    let id = notification["id"].as_str().unwrap_or_default();
    let found = admin.get(&format!("/v1/admin/notifications/{id}")).await?;
    let in_app: Vec<&Value> = found["deliveries"]
        .as_array()
        .map(|all| all.iter().filter(|d| d["channel"] == "in_app").collect())
        .unwrap_or_default();
    let held_until_end = |d: &Value| {
        d["status"] == "queued"
            && d["not_before"]
                .as_str()
                .is_some_and(|at| at.contains(&format!("T{quiet_end}:00")))
    };
    let fine = match Kind::of(i) {
        Kind::OptedOut => in_app.is_empty(),
        Kind::Quiet => in_app.len() == 1 && held_until_end(in_app[0]),
        Kind::Plain => {
            in_app.len() == 1
                && in_app[0]["status"]
                    .as_str()
                    .is_some_and(|s| ["sent", "delivered"].contains(&s))
        }
    };
    Ok((!fine).then(|| {
        format!(
            "{user} ({}): in-app deliveries {in_app:?}",
            Kind::of(i).name()
        )
    }))
}

/// Looks at [`SAMPLE`] users of each group; one check per group.
async fn sample_checks(
    admin: &Admin,
    broadcast_id: &str,
    users: usize,
    quiet_end: &str,
) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    for (kind, expect) in [
        (Kind::OptedOut, "no in-app delivery"),
        (
            Kind::Quiet,
            "one in-app delivery, queued until their quiet hours end",
        ),
        (Kind::Plain, "one in-app delivery, sent"),
    ] {
        let picked = seed::sample(users, kind, SAMPLE);
        let looks = picked
            .iter()
            .map(|&i| sample_problem(admin, broadcast_id, i, quiet_end));
        let mut problems = Vec::new();
        for problem in futures::future::join_all(looks).await {
            problems.extend(problem?);
        }
        checks.push(Check {
            what: format!("{} sampled {} users: {expect}", picked.len(), kind.name()),
            ok: problems.is_empty(),
            detail: problems.into_iter().take(3).collect::<Vec<_>>().join("; "),
        });
    }
    Ok(checks)
}

fn equal(what: &str, got: f64, want: u64) -> Check {
    Check {
        what: format!("{what} = {want}"),
        ok: got == want as f64,
        detail: format!("got {got}"),
    }
}

pub async fn scenario_broadcast(env: &Env, backing: &mut Backing) -> Result<BroadcastReport> {
    let users = env.options.broadcast_users;
    let baseline_users = env.options.broadcast_baseline.unwrap_or(users).min(users);
    let database = backing.database.name();
    let engine_env = env.on(backing).await?;
    let setup = &engine_env.setup;
    let config = setup.data_dir("engine")?;
    let path = config.path().join("nudge.toml");
    std::fs::write(&path, seed::engine_toml())?;
    let path_text = path.display().to_string();
    let mut cp = ControlPlane::new(setup)?.with_env([("NUDGE_CP_CONFIG", path_text.as_str())]);
    cp.start().await?;
    let admin = Admin::new(&cp, &setup.admin_token);
    let opted_out = seed::count(users, Kind::OptedOut);
    let quiet = seed::count(users, Kind::Quiet);
    let expected = users as u64 - opted_out - quiet;
    let window = seed::quiet_window();

    eprintln!(
        "  broadcast ({database}): seeding {users} users ({opted_out} opted out, {quiet} with quiet hours {}-{} UTC)",
        window.0, window.1
    );
    let seeded = seed::seed(&admin, users, &window).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = memory(cp.process.pid()).0;
    let mut report = BroadcastReport {
        database,
        users: users as u64,
        opted_out,
        quiet,
        quiet_window: window.clone(),
        seeded,
        cp_idle_rss: idle_rss,
        ..BroadcastReport::default()
    };

    eprintln!("  broadcast ({database}): one broadcast to {users} subscribers");
    let id = format!("bench-{}", std::process::id());
    let body = json!({
        "id": id,
        "type": seed::TYPE,
        "title": seed::TITLE,
        "body": seed::BODY,
        "channels": ["in_app"],
        "audience": { "topic": TOPIC },
    });
    let meter = Meter::start(&cp, backing);
    let before = cp.metrics().await?;
    let begin = Instant::now();
    let (status, created_reply) = admin
        .send(reqwest::Method::POST, "/v1/admin/broadcasts", Some(&body))
        .await?;
    let accepted_secs = begin.elapsed().as_secs_f64();
    if status != 201 {
        return Err(format!("POST /v1/admin/broadcasts: {status}: {created_reply}").into());
    }
    let watched = watch(
        &cp,
        &admin,
        begin,
        before,
        Planned::Broadcast(&id),
        expected,
    )
    .await?;
    let phase = meter
        .finish("broadcast", users as u64, accepted_secs, expected, &watched)
        .await;
    let fanned = &watched.broadcast;
    let figure = |key: &str| fanned[key].as_f64().unwrap_or(f64::NAN);
    report.checks.push(equal(
        "broadcast recipients",
        figure("recipients"),
        users as u64,
    ));
    report.checks.push(equal(
        "broadcast notifications",
        figure("notifications"),
        users as u64,
    ));
    report
        .checks
        .push(equal("users scanned", figure("scanned"), users as u64));
    report.checks.push(equal(
        "in-app sent a second later (users neither opted out nor quiet)",
        settled_sent(&cp, &watched.before).await?,
        expected,
    ));
    report.checks.push(equal(
        "in-app deliveries queued (quiet-hours users, queue-depth gauge)",
        queued_in_app(&cp, quiet).await?,
        quiet,
    ));
    report
        .checks
        .extend(sample_checks(&admin, &id, users, &window.1).await?);
    report.phases.push(phase);

    if baseline_users > 0 {
        eprintln!("  broadcast ({database}): baseline, {baseline_users} notifies over gRPC");
        let expected = (0..baseline_users)
            .filter(|&i| Kind::of(i) == Kind::Plain)
            .count() as u64;
        let meter = Meter::start(&cp, backing);
        let before = cp.metrics().await?;
        let begin = Instant::now();
        let run = format!("bench-notify-{}", std::process::id());
        let grpc_url = cp.grpc_url();
        let (pushed, watched) = tokio::join!(
            seed::push_notifies(&grpc_url, cp.agent_token(), &run, baseline_users),
            watch(
                &cp,
                &admin,
                begin,
                before,
                Planned::Notifies(baseline_users as f64),
                expected,
            )
        );
        let (accepted_secs, watched) = (pushed?, watched?);
        let phase = meter
            .finish(
                "notifies",
                baseline_users as u64,
                accepted_secs,
                expected,
                &watched,
            )
            .await;
        report.checks.push(equal(
            "baseline: in-app sent a second later",
            settled_sent(&cp, &watched.before).await?,
            expected,
        ));
        let quiet_baseline = seed::count(baseline_users, Kind::Quiet);
        report.checks.push(equal(
            "baseline: in-app deliveries queued (both phases' quiet-hours users)",
            queued_in_app(&cp, quiet + quiet_baseline).await?,
            quiet + quiet_baseline,
        ));
        report.phases.push(phase);
    }
    let (status, _) = cp.process.terminate(Duration::from_secs(30)).await?;
    if !status.success() {
        return Err(format!("the control plane exited with {status}").into());
    }
    Ok(report)
}
