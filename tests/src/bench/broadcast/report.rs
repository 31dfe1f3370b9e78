//! The broadcast section's figures: one [`Phase`] per path (the broadcast,
//! the baseline's notifies), the seeding apart, the [`Check`]s; as JSON
//! and as a table in the other sections' style.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::seed::{self, IN_APP_SLOTS, PUSH_BATCH, PUSHERS, Seeded, WORKERS};

/// One path from request to in-app deliveries.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    /// `broadcast` or `notifies`.
    pub label: &'static str,
    pub users: u64,
    /// Start → the create call answered, or the last push acknowledged.
    pub accepted_secs: f64,
    /// Start → every notification planned (see the module doc).
    pub planned_secs: f64,
    /// In-app deliveries due now: users neither opted out nor quiet.
    pub in_app_expected: u64,
    pub first_sent_secs: Option<f64>,
    /// Start → the last expected in-app delivery sent.
    pub last_sent_secs: f64,
    pub queue_p50_s: f64,
    pub queue_p99_s: f64,
    /// CPU cores of the control plane over the phase.
    pub cp_cores: f64,
    /// CPU cores of the PostgreSQL cluster (server and backends).
    pub db_cores: Option<f64>,
    /// VmRSS sampled every 50 ms during the phase, its maximum.
    pub cp_peak_rss: u64,
    /// VmHWM after the phase: since the control plane's start.
    pub cp_hwm: u64,
}

impl Phase {
    pub fn planned_per_sec(&self) -> f64 {
        self.users as f64 / self.planned_secs
    }

    pub fn in_app_per_sec(&self) -> f64 {
        self.in_app_expected as f64 / self.last_sent_secs
    }

    fn to_json(&self) -> Value {
        json!({
            "path": self.label,
            "users": self.users,
            "accepted_secs": self.accepted_secs,
            "planned_secs": self.planned_secs,
            "users_planned_per_sec": self.planned_per_sec(),
            "in_app_deliveries": self.in_app_expected,
            "first_in_app_sent_secs": self.first_sent_secs,
            "last_in_app_sent_secs": self.last_sent_secs,
            "in_app_deliveries_per_sec": self.in_app_per_sec(),
            "in_app_queue_latency_p50_ms_estimated": self.queue_p50_s * 1e3,
            "in_app_queue_latency_p99_ms_estimated": self.queue_p99_s * 1e3,
            "cp_cpu_cores": self.cp_cores,
            "postgres_cpu_cores": self.db_cores,
            "cp_peak_vmrss_bytes": self.cp_peak_rss,
            "cp_vmhwm_bytes": self.cp_hwm,
        })
    }
}

/// A correctness check: printed, never fails the run.
#[derive(Debug, Clone, Default)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    /// What was seen instead, when not ok.
    pub detail: String,
}

#[derive(Debug, Clone, Default)]
pub struct BroadcastReport {
    pub database: &'static str,
    pub users: u64,
    pub opted_out: u64,
    pub quiet: u64,
    /// Quiet hours, UTC `HH:MM`, start and end.
    pub quiet_window: (String, String),
    pub seeded: Seeded,
    /// VmRSS once seeded, before the broadcast.
    pub cp_idle_rss: u64,
    pub phases: Vec<Phase>,
    pub checks: Vec<Check>,
}

impl BroadcastReport {
    pub fn to_json(&self) -> Value {
        json!({
            "database": self.database,
            "users": self.users,
            "opted_out": self.opted_out,
            "quiet_hours": self.quiet,
            "seeding": {
                "subscriptions": self.seeded.subscriptions,
                "preferences": self.seeded.preferences,
                "secs": self.seeded.secs,
                "requests_per_sec": self.seeding_per_sec(),
                "retries": self.seeded.retries,
                "workers": WORKERS,
            },
            "cp_idle_vmrss_bytes": self.cp_idle_rss,
            "phases": self.phases.iter().map(Phase::to_json).collect::<Vec<_>>(),
            "checks": self.checks.iter().map(|c| json!({
                "check": c.what, "ok": c.ok, "detail": if c.ok { "" } else { c.detail.as_str() },
            })).collect::<Vec<_>>(),
        })
    }

    fn seeding_per_sec(&self) -> f64 {
        (self.seeded.subscriptions + self.seeded.preferences) as f64 / self.seeded.secs
    }
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

pub fn render(report: &BroadcastReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "11. broadcast on {}: one broadcast to a topic of {} users ({} opted out of the type's in-app channel, {} in quiet hours {}-{} UTC), vs. the same notifies one per user",
        report.database,
        report.users,
        report.opted_out,
        report.quiet,
        report.quiet_window.0,
        report.quiet_window.1
    );
    let _ = writeln!(
        out,
        "  engine: type {} (in_app, not critical, instant); [concurrency] in_app {IN_APP_SLOTS}; fan-out pages of 500 users; baseline = {PUSHERS} gRPC pushers, {PUSH_BATCH} notifies a push",
        seed::TYPE
    );
    let _ = writeln!(
        out,
        "  seeding (not in the figures): {} subscriptions + {} preferences over the admin HTTP API ({WORKERS} workers) in {:.1} s = {:.0} req/s{}; control plane VmRSS then {}",
        report.seeded.subscriptions,
        report.seeded.preferences,
        report.seeded.secs,
        report.seeding_per_sec(),
        if report.seeded.retries > 0 {
            format!(", {} retried", report.seeded.retries)
        } else {
            String::new()
        },
        mib(report.cp_idle_rss)
    );
    let _ = writeln!(
        out,
        "{:<10} {:>7} {:>8} {:>9} {:>9} {:>7} {:>8} {:>7} {:>8} {:>9} {:>9} {:>5} {:>5} {:>10} {:>10}",
        "path",
        "users",
        "accept s",
        "planned s",
        "planned/s",
        "in-app",
        "first s",
        "last s",
        "in-app/s",
        "q p50 ms",
        "q p99 ms",
        "cp",
        "db",
        "peak RSS",
        "VmHWM"
    );
    for p in &report.phases {
        let _ = writeln!(
            out,
            "{:<10} {:>7} {:>8.2} {:>9.2} {:>9.0} {:>7} {:>8} {:>7.2} {:>8.0} {:>9} {:>9} {:>5.2} {:>5} {:>10} {:>10}",
            p.label,
            p.users,
            p.accepted_secs,
            p.planned_secs,
            p.planned_per_sec(),
            p.in_app_expected,
            p.first_sent_secs
                .map_or_else(|| "-".into(), |s| format!("{s:.2}")),
            p.last_sent_secs,
            p.in_app_per_sec(),
            ms(p.queue_p50_s),
            ms(p.queue_p99_s),
            p.cp_cores,
            p.db_cores.map_or_else(|| "-".into(), |c| format!("{c:.2}")),
            mib(p.cp_peak_rss),
            mib(p.cp_hwm)
        );
    }
    for check in &report.checks {
        if check.ok {
            let _ = writeln!(out, "  check ok: {}", check.what);
        } else {
            let _ = writeln!(out, "  CHECK FAILED: {} ({})", check.what, check.detail);
        }
    }
    let _ = writeln!(
        out,
        "(accept s = the create call answered, or every push acknowledged; planned s = start -> broadcast `done`, or -> N notifications created by notifies; planned/s = users / planned s;"
    );
    let _ = writeln!(
        out,
        " in-app = deliveries due now (users neither opted out nor quiet); first/last s = start -> first/last of them `sent` (nudge_cp_deliveries_total, polled every 50 ms); in-app/s = in-app / last s;"
    );
    let _ = writeln!(
        out,
        " q p50/p99 = in-app queue latency ESTIMATED from nudge_cp_delivery_latency_seconds buckets; cp/db = CPU cores of the control plane / the PostgreSQL cluster over the phase;"
    );
    let _ = writeln!(
        out,
        " peak RSS = the control plane's VmRSS sampled every 50 ms in the phase; VmHWM since its start; the broadcast runs first, then the baseline on the same database)"
    );
    out
}
