//! What the kernel says about a process (Linux `/proc`): resident memory
//! (VmRSS, VmHWM), CPU seconds (of one process, or of a server and the
//! processes it forked), and a sampler of peak RSS. Promises: a
//! process that is gone or unreadable reads as 0, never an error, so a
//! figure can be missing but a run never fails on it.

use std::future::Future;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

/// VmRSS and VmHWM of a process, in bytes.
pub fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Clock ticks per second, the unit of `/proc/PID/stat`'s times.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(100.0)
    })
}

/// The fields of `/proc/PID/stat` after the command name (which may hold
/// spaces and parentheses): state is 0, ppid 1, utime 11, stime 12, cutime
/// 13, cstime 14. Empty when the process is gone.
fn stat_fields(pid: &str) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// CPU seconds (user, system) a process has used; `"self"` for this one.
pub fn cpu_seconds(pid: &str) -> [f64; 2] {
    let ticks = clock_ticks();
    let fields = stat_fields(pid);
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    [field(11) / ticks, field(12) / ticks]
}

/// CPU seconds (user + system) of a server that forks a process per
/// connection (PostgreSQL's postmaster and its backends): `root`'s own, its
/// children's that it has reaped (`cutime`, `cstime`), and its live
/// children's. A child that exits between two readings moves from the
/// last term to the second, so a difference of two readings counts it once.
pub fn tree_cpu_seconds(root: u32) -> f64 {
    let ticks = clock_ticks();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut total = 0.0;
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let fields = stat_fields(&pid.to_string());
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        if pid == root {
            total += (field(11) + field(12) + field(13) + field(14)) / ticks;
        } else if field(1) == f64::from(root) {
            total += (field(11) + field(12)) / ticks;
        }
    }
    total
}

/// Cores (user, system) a set of processes used while `work` ran.
pub async fn with_cpu<T>(pids: &[String], work: impl Future<Output = T>) -> (T, Vec<[f64; 2]>) {
    let before: Vec<[f64; 2]> = pids.iter().map(|p| cpu_seconds(p)).collect();
    let begin = Instant::now();
    let value = work.await;
    let wall = begin.elapsed().as_secs_f64();
    let cores = pids
        .iter()
        .zip(before)
        .map(|(p, b)| {
            let after = cpu_seconds(p);
            [(after[0] - b[0]) / wall, (after[1] - b[1]) / wall]
        })
        .collect();
    (value, cores)
}

/// Samples VmRSS of some processes every 50 ms until stopped; keeps the max.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    peaks: Vec<Arc<AtomicI64>>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    pub fn start(pids: Vec<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peaks: Vec<Arc<AtomicI64>> = pids.iter().map(|_| Arc::new(AtomicI64::new(0))).collect();
        let task = tokio::spawn({
            let (stop, peaks) = (Arc::clone(&stop), peaks.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    for (pid, peak) in pids.iter().zip(&peaks) {
                        peak.fetch_max(memory(*pid).0 as i64, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        RssSampler { stop, peaks, task }
    }

    pub async fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peaks
            .iter()
            .map(|p| p.load(Ordering::Relaxed) as u64)
            .collect()
    }
}

/// Bytes allocated on disk under `path` (files' blocks, recursively); 0
/// for what cannot be read.
pub fn dir_bytes(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}
