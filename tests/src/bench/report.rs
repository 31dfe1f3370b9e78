//! What the benchmark prints: the machine's facts (the figures are this
//! machine's), then either the tables or one JSON document. Promises: the
//! tables' layout and the JSON keys are stable, so runs can be compared.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use super::options::Options;
use super::scenarios::{Disk, EndToEnd, Memory, Row};
use super::{BATCH_EVENTS, Env};

pub fn machine_facts(options: &Options, env: &Env) -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let mem_total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:").map(|r| r.trim().to_string()))
        })
        .unwrap_or_default();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    json!({
        "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "kernel": kernel,
        "loadavg_at_start": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "mem_total": mem_total,
        "date": date,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "data_dir_fs": filesystem_of(&env.setup.data_parent),
        "data_dir_parent": env.setup.data_parent.display().to_string(),
        "agent": env.setup.agent_bin.display().to_string(),
        "duration_s": options.duration.as_secs_f64(),
        "warmup_s": options.warmup.as_secs_f64(),
    })
}

/// The file-system type (from /proc/mounts) holding `path`: fsync costs
/// differ by orders of magnitude between tmpfs, ext4 on SSD and network disks.
fn filesystem_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (device, mount, fstype) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mount)
                .then(|| (mount.len(), format!("{fstype} ({device} on {mount})")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "?".into(), |(_, s)| s)
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

pub fn render(
    facts: &Value,
    rows: &[Row],
    e2e: Option<&EndToEnd>,
    disk: Option<&Disk>,
    intake_hwm: &[(String, u64)],
    bodies: (usize, usize),
) -> String {
    let mut out = String::new();
    let f = |k: &str| {
        facts[k]
            .as_str()
            .map_or_else(|| facts[k].to_string(), str::to_string)
    };
    let _ = writeln!(
        out,
        "nudge-bench  {}  nproc={}  cpu={}  mem={}  kernel={}  profile={}  loadavg at start={}",
        f("date"),
        f("nproc"),
        f("cpu"),
        f("mem_total"),
        f("kernel"),
        f("profile"),
        f("loadavg_at_start")
    );
    let _ = writeln!(
        out,
        "data dirs on {}; {}s measured per row after {}s warm-up",
        f("data_dir_fs"),
        f("duration_s"),
        f("warmup_s")
    );
    let _ = writeln!(
        out,
        "client: closed-loop workers, one keep-alive HTTP/1.1 connection each (hyper conn API), exact percentiles"
    );
    let _ = writeln!(
        out,
        "bodies: /v1/track {} B; /v1/batch of {BATCH_EVENTS} events {} B; no control plane during intake rows",
        bodies.0, bodies.1
    );
    if !rows.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<30} {:>4} {:>9} {:>9} {:>7} {:>7} {:>7} {:>6} {:>7} {:>5} {:>5} {:>5} {:>9} {:>10}",
            "intake scenario",
            "conc",
            "req/s",
            "events/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "errors",
            "vs base",
            "agent",
            "sys",
            "bench",
            "flushes/s",
            "calls/flush"
        );
        for row in rows {
            let r = &row.result;
            let ratio = row
                .baseline_rps
                .map_or_else(|| "-".into(), |b| format!("{:.2}", r.per_sec() / b));
            let _ = writeln!(
                out,
                "{:<30} {:>4} {:>9.0} {:>9.0} {:>7.3} {:>7.3} {:>7.1} {:>6} {:>7} {:>5} {:>5} {:>5.2} {:>9} {:>10}",
                row.scenario,
                row.concurrency,
                r.per_sec(),
                r.per_sec() * row.events_per_request as f64,
                r.percentile_ms(50.0),
                r.percentile_ms(99.0),
                r.percentile_ms(100.0),
                r.errors + r.transport_errors,
                ratio,
                row.agent_cores
                    .map_or_else(|| "-".into(), |c| format!("{:.2}", c[0] + c[1])),
                row.agent_cores
                    .map_or_else(|| "-".into(), |c| format!("{:.2}", c[1])),
                row.bench_cores,
                row.flushes
                    .map_or_else(|| "-".into(), |f| format!("{:.0}", f.per_sec)),
                row.flushes
                    .map_or_else(|| "-".into(), |f| format!("{:.1}", f.calls_per_flush)),
            );
        }
        let _ = writeln!(
            out,
            "(agent = CPU cores the agent used in the row, sys = the kernel's part of it; bench = cores of this process: load generator, plus the server in baseline rows)"
        );
        let _ = writeln!(
            out,
            "(flushes/s = the agent's group commits per second, calls/flush = calls answered per group commit; both over the row's warm-up and measured time)"
        );
    }
    if !intake_hwm.is_empty() {
        let list: Vec<String> = intake_hwm
            .iter()
            .map(|(k, v)| format!("{k}: {}", mib(*v as f64)))
            .collect();
        let _ = writeln!(
            out,
            "agent VmHWM after each intake row — {}",
            list.join("; ")
        );
    }
    if let Some(e) = e2e {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "end to end: {} events (/v1/batch x{BATCH_EVENTS}, 16 workers) agent -> gRPC -> control plane (fsync, default linger)",
            e.events
        );
        let _ = writeln!(
            out,
            "  accepted by agent     {:>7.2} s  {:>9.0} events/s  (intake errors {})",
            e.send_secs,
            e.events as f64 / e.send_secs,
            e.intake_errors
        );
        let _ = writeln!(
            out,
            "  stored by cp (stats)  {:>7.2} s  {:>9.0} events/s  end to end",
            e.stored_secs,
            e.events as f64 / e.stored_secs
        );
        let _ = writeln!(
            out,
            "  agent outbox empty    {:>7.2} s  (outbox peak seen {:.0} events)",
            e.drained_secs, e.outbox_peak_events
        );
        let _ = writeln!(
            out,
            "  CPU cores used meanwhile: agent {:.2}, control plane {:.2}",
            e.cores[0], e.cores[1]
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<22} {:>12} {:>14} {:>12} {:>14}",
            "RSS (end-to-end run)", "idle", "peak sampled", "VmHWM", "after drain"
        );
        for (name, m) in [
            ("nudge-agent", &e.agent),
            ("nudge-control-plane", &e.control_plane),
        ] {
            let _ = writeln!(
                out,
                "{:<22} {:>12} {:>14} {:>12} {:>14}",
                name,
                mib(m.idle as f64),
                mib(m.peak_sampled as f64),
                mib(m.hwm as f64),
                mib(m.after_drain as f64)
            );
        }
    }
    if let Some(d) = disk {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "outbox on disk: {} events (~{:.0} B of JSON each) written with the control plane down",
            d.events, d.json_bytes_per_event
        );
        let _ = writeln!(
            out,
            "  empty agent           disk {:>10}",
            mib(d.floor_disk)
        );
        let _ = writeln!(
            out,
            "  backlog ({:.0} events)  disk {:>10} = {:.0} B/event; encoded {} = {:.0} B/event; space amplification {:.1}x; {} segment(s)",
            d.backlog_events,
            mib(d.backlog_disk),
            d.backlog_disk / d.events as f64,
            mib(d.backlog_encoded),
            d.backlog_encoded / d.events as f64,
            d.backlog_disk / d.backlog_encoded,
            d.backlog_segments
        );
        let _ = writeln!(
            out,
            "  after drain ({:.1} s)   disk {:>10}; {} segment(s)",
            d.drain_secs,
            mib(d.after_drain_disk),
            d.after_drain_segments
        );
    }
    out
}

pub fn to_json(
    facts: &Value,
    rows: &[Row],
    e2e: Option<&EndToEnd>,
    disk: Option<&Disk>,
    intake_hwm: &[(String, u64)],
) -> Value {
    let mem = |m: &Memory| json!({"idle": m.idle, "peak_sampled": m.peak_sampled, "vmhwm": m.hwm, "after_drain": m.after_drain});
    json!({
        "machine": facts,
        "intake": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        "intake_agent_vmhwm_bytes": intake_hwm.iter().map(|(k, v)| (k.clone(), *v)).collect::<BTreeMap<_, _>>(),
        "end_to_end": e2e.map(|e| json!({
            "events": e.events,
            "accepted_secs": e.send_secs,
            "stored_secs": e.stored_secs,
            "outbox_empty_secs": e.drained_secs,
            "events_per_sec_end_to_end": e.events as f64 / e.stored_secs,
            "intake_errors": e.intake_errors,
            "outbox_peak_events": e.outbox_peak_events,
            "cpu_cores": {"agent": e.cores[0], "control_plane": e.cores[1]},
            "rss_bytes": {"agent": mem(&e.agent), "control_plane": mem(&e.control_plane)},
        })),
        "outbox_disk": disk.map(|d| json!({
            "events": d.events,
            "json_bytes_per_event": d.json_bytes_per_event,
            "empty_disk_bytes": d.floor_disk,
            "backlog_disk_bytes": d.backlog_disk,
            "backlog_encoded_bytes": d.backlog_encoded,
            "disk_bytes_per_event": d.backlog_disk / d.events as f64,
            "encoded_bytes_per_event": d.backlog_encoded / d.events as f64,
            "after_drain_disk_bytes": d.after_drain_disk,
            "drain_secs": d.drain_secs,
        })),
    })
}
