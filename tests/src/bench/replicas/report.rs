//! What the replicas section prints: one table row per replica count
//! (throughput, its ratio to one replica, CPU per 1,000 events and
//! notifications, split by replica), the failover lines, and the same as
//! JSON. Promises: the columns and JSON keys are stable, so runs compare.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use super::REPEATS;
use super::failover::{self, Failover, spread};
use super::workload::{self, INGEST_WORKERS, NOTIFY_USERS, Phase};
use crate::bench::BATCH_EVENTS;

#[derive(Debug, Clone, Default)]
pub struct ReplicasReport {
    /// Agents in every row (spread over the replicas).
    pub agents: usize,
    pub lease_ttl: Duration,
    pub rows: Vec<Row>,
    pub failover: Option<Failover>,
    /// Why something was not measured.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Row {
    pub replicas: usize,
    pub ingest: Phase,
    pub notify: Phase,
}

impl ReplicasReport {
    /// The row of one replica, which the others are compared with.
    fn one(&self) -> Option<&Row> {
        self.rows.iter().find(|row| row.replicas == 1)
    }

    /// `row`'s (events/s, notifications/s) over the one-replica row's.
    fn ratios(&self, row: &Row) -> (Option<f64>, Option<f64>) {
        match self.one() {
            Some(one) => (
                Some(row.ingest.per_sec() / one.ingest.per_sec()),
                Some(row.notify.per_sec() / one.notify.per_sec()),
            ),
            None => (None, None),
        }
    }

    pub fn to_json(&self) -> Value {
        let phase = |phase: &Phase| {
            json!({
                "count": phase.count,
                "secs": phase.secs,
                "per_sec_median": phase.per_sec(),
                "per_sec_each_repeat": phase.rates,
                "cp_cpu_ms_per_1000": phase.cpu_ms_per_1000(),
                "cp_cpu_ms_per_1000_each_replica": phase.cpu_ms_per_1000_each(),
                "postgres_cpu_ms_per_1000": phase.database_cpu_ms_per_1000(),
                "refusals": phase.refusals,
                "ingest_transactions": phase.commits.map(|c| c.count),
                "events_per_ingest_transaction": phase.commits.map(|c| phase.count as f64 / c.count),
                "ingest_transaction_mean_ms": phase.commits.map(|c| c.mean_ms()),
            })
        };
        json!({
            "database": "postgres",
            "agents": self.agents,
            "lease_ttl_secs": self.lease_ttl.as_secs_f64(),
            "notify_channel": workload::CHANNEL,
            "rows": self.rows.iter().map(|row| {
                let (ingest_ratio, notify_ratio) = self.ratios(row);
                json!({
                    "replicas": row.replicas,
                    "events_per_sec_end_to_end": row.ingest.per_sec(),
                    "events_ratio_to_one_replica": ingest_ratio,
                    "notifications_per_sec": row.notify.per_sec(),
                    "notifications_ratio_to_one_replica": notify_ratio,
                    "ingest": phase(&row.ingest),
                    "notify": phase(&row.notify),
                })
            }).collect::<Vec<_>>(),
            "failover": self.failover.as_ref().map(|f| {
                let (leases, _, _) = spread(f.rounds.iter().map(|r| r.leases_moved_secs));
                let (planned, _, _) = spread(f.rounds.iter().map(|r| r.planned_secs));
                json!({
                    "replicas": f.replicas,
                    "lease_ttl_secs": f.lease_ttl.as_secs_f64(),
                    "lease_refresh_secs": f.lease_ttl.as_secs_f64() / 4.0,
                    "leases_moved_secs_median": leases,
                    "planned_again_secs_median": planned,
                    "rounds": f.rounds.iter().map(|r| json!({
                        "victim": r.victim,
                        "victim_partitions": r.victim_partitions,
                        "leases_moved_secs": r.leases_moved_secs,
                        "planned_again_secs": r.planned_secs,
                        "probe_before_kill_secs": r.probe_before_secs,
                    })).collect::<Vec<_>>(),
                    "light_load_events": f.light_events,
                    "poll_ms": failover::POLL.as_millis() as u64,
                })
            }),
            "notes": self.notes,
        })
    }
}

fn ratio(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |r| format!("{r:.2}"))
}

fn each(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn database(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.0}"))
}

/// The failover's lines, without a trailing newline.
pub fn failover_lines(f: &Failover) -> String {
    let ttl = f.lease_ttl.as_secs_f64();
    let figure = |values: &mut dyn Iterator<Item = f64>| {
        let (median, least, most) = spread(values);
        format!("{median:>6.2} s  ({least:.2}-{most:.2})")
    };
    let partitions: Vec<String> = f
        .rounds
        .iter()
        .map(|r| r.victim_partitions.to_string())
        .collect();
    let (probe, _, _) = spread(f.rounds.iter().map(|r| r.probe_before_secs));
    format!(
        "failover: {} SIGKILLs, each of 1 of {} replicas (it held {} of 32 feed partitions; restarted between kills), light load through a survivor ({} events acked), NUDGE_CP_LEASE_TTL={ttl:.0}s, refresh every {:.2}s; median (min-max):\n  \
         its partitions held again (survivors hold 32, none unowned)  {}\n  \
         a new event of a user in its partitions planned              {}   (the same probe before a kill: {probe:.2} s)",
        f.rounds.len(),
        f.replicas,
        partitions.join("/"),
        f.light_events,
        ttl / 4.0,
        figure(&mut f.rounds.iter().map(|r| r.leases_moved_secs)),
        figure(&mut f.rounds.iter().map(|r| r.planned_secs)),
    )
}

pub fn render(report: &ReplicasReport, events: u64, notifies: u64, workers: usize) -> String {
    let mut out = String::new();
    if report.rows.is_empty() {
        let _ = writeln!(out, "\n10. Replicas (issue 13)");
        for note in &report.notes {
            let _ = writeln!(out, "  {note}");
        }
        return out;
    }
    let _ = writeln!(
        out,
        "\n10. Replicas (issue 13): N control planes on one PostgreSQL database (the bench's own cluster, a fresh database per row), {} agents, each shipping to every replica (a URL list), NUDGE_CP_LEASE_TTL={}s",
        report.agents,
        report.lease_ttl.as_secs()
    );
    let _ = writeln!(
        out,
        "  ingest: {events} events as /v1/batch x{BATCH_EVENTS} from {INGEST_WORKERS} workers until stored (as e2e); notifications: {notifies} {} notifies from {workers} workers to {NOTIFY_USERS} users until sent (as notify); {REPEATS} times each",
        workload::CHANNEL
    );
    let _ = writeln!(
        out,
        "{:>8} {:>9} {:>5} {:>8} {:>5} {:>11} {:<14} {:>11} {:>9} {:>9} {:>14} {:>14}",
        "replicas",
        "events/s",
        "vs 1",
        "notif/s",
        "vs 1",
        "CP ms/1k ev",
        "each replica",
        "PG ms/1k ev",
        "ev/commit",
        "commit ms",
        "CP ms/1k notif",
        "PG ms/1k notif"
    );
    for row in &report.rows {
        let (ingest_ratio, notify_ratio) = report.ratios(row);
        let _ = writeln!(
            out,
            "{:>8} {:>9.0} {:>5} {:>8.0} {:>5} {:>11.0} {:<14} {:>11} {:>9} {:>9} {:>14.0} {:>14}",
            row.replicas,
            row.ingest.per_sec(),
            ratio(ingest_ratio),
            row.notify.per_sec(),
            ratio(notify_ratio),
            row.ingest.cpu_ms_per_1000(),
            each(&row.ingest.cpu_ms_per_1000_each()),
            database(row.ingest.database_cpu_ms_per_1000()),
            row.ingest.commits.map_or_else(
                || "-".into(),
                |c| format!("{:.0}", row.ingest.count as f64 / c.count)
            ),
            row.ingest
                .commits
                .map_or_else(|| "-".into(), |c| format!("{:.1}", c.mean_ms())),
            row.notify.cpu_ms_per_1000(),
            database(row.notify.database_cpu_ms_per_1000()),
        );
    }
    if let Some(f) = &report.failover {
        let _ = writeln!(out, "{}", failover_lines(f));
    }
    for note in &report.notes {
        let _ = writeln!(out, "  {note}");
    }
    let _ = writeln!(
        out,
        "(events/s = first batch sent -> all stored; notif/s = first notify sent -> N-th webhook at the receiver (in this process); each the median of {REPEATS} repeats (all in --json); vs 1 = ratio to the 1-replica row;"
    );
    let _ = writeln!(
        out,
        " CP ms/1k = CPU ms (user+system, /proc) of all replicas per 1,000 events (until stored and planned) or notifications (until recorded sent), each replica = its part; PG = postmaster and backends;"
    );
    let _ = writeln!(
        out,
        " ev/commit, commit ms = events per ingest transaction and its mean time, lock waits included, over all replicas (nudge_cp_storage_operation_duration_seconds{{operation=\"ingest\"}});"
    );
    let _ = writeln!(
        out,
        " failover figures from the SIGKILL, polled every {} ms: between TTL - refresh and TTL + refresh, since the victim last renewed up to one refresh before it)",
        failover::POLL.as_millis()
    );
    out
}
