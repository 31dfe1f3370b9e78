//! Tests of the outbox's invariants (see the module doc).

use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::*;

fn config(dir: &Path) -> OutboxConfig {
    let mut config = OutboxConfig::new(dir);
    config.segment_max_bytes = 64 << 10;
    config.cache_capacity = 1 << 20;
    config
}

fn record(n: usize, len: usize) -> Bytes {
    let mut bytes = format!("record-{n:08}-").into_bytes();
    bytes.resize(len, b'x');
    Bytes::from(bytes)
}

/// An outbox with its flusher running; the token stops the flusher.
fn start(config: OutboxConfig) -> (Outbox, CancellationToken) {
    let outbox = Outbox::open(config, Metrics::new()).unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(run_flusher(outbox.clone(), stop.clone()));
    (outbox, stop)
}

fn drain(outbox: &Outbox) -> Vec<Bytes> {
    let mut shipped = Vec::new();
    while let Some(batch) = outbox.next_batch(100, 1 << 20).unwrap() {
        shipped.extend(batch.records.iter().map(|r| r.bytes.clone()));
        outbox.remove(batch.segment_id, &batch.records).unwrap();
    }
    shipped
}

#[tokio::test]
async fn appended_records_are_read_back_in_order_and_removed_after_ack() {
    let dir = tempfile::tempdir().unwrap();
    let (outbox, _stop) = start(config(dir.path()));
    for n in 0..10 {
        outbox.append(vec![record(n, 100)]).await.unwrap();
    }
    assert_eq!(outbox.pending_events(), 10);
    let batch = outbox.next_batch(4, 1 << 20).unwrap().unwrap();
    assert_eq!(batch.records.len(), 4);
    // Reading again without removing returns the same records: nothing is
    // lost when a shipment fails.
    let again = outbox.next_batch(4, 1 << 20).unwrap().unwrap();
    assert_eq!(
        batch.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        again.records.iter().map(|r| r.seq).collect::<Vec<_>>()
    );
    outbox.remove(batch.segment_id, &batch.records).unwrap();
    assert_eq!(outbox.pending_events(), 6);
    let rest = drain(&outbox);
    assert_eq!(rest, (4..10).map(|n| record(n, 100)).collect::<Vec<_>>());
    assert_eq!(outbox.pending_bytes(), 0);
}

#[tokio::test]
async fn batch_append_is_atomic_and_respects_the_byte_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (outbox, _stop) = start(config(dir.path()));
    let receipt = outbox
        .append((0..5).map(|n| record(n, 1000)).collect())
        .await
        .unwrap();
    assert_eq!(receipt.seqs.len(), 5);
    let batch = outbox.next_batch(100, 2500).unwrap().unwrap();
    assert_eq!(
        batch.records.len(),
        2,
        "2 x 1000 bytes fit in 2500, 3 do not"
    );
}

#[tokio::test]
async fn a_full_quota_refuses_without_writing_and_accepts_again_after_drain() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.max_bytes = 10_000;
    let (outbox, _stop) = start(config);
    for n in 0..10 {
        outbox.append(vec![record(n, 1000)]).await.unwrap();
    }
    let refused = outbox.append(vec![record(99, 1000)]).await;
    assert!(matches!(
        refused,
        Err(AppendError::QuotaFull {
            used: 10_000,
            quota: 10_000,
            ..
        })
    ));
    assert_eq!(outbox.pending_events(), 10);
    assert_eq!(drain(&outbox).len(), 10);
    outbox.append(vec![record(11, 1000)]).await.unwrap();
    assert_eq!(outbox.pending_events(), 1);
}

#[tokio::test]
async fn records_survive_a_reopen_and_keep_their_order() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (outbox, stop) = start(config(dir.path()));
        // Enough to span several segments.
        for n in 0..300 {
            outbox.append(vec![record(n, 1000)]).await.unwrap();
        }
        stop.cancel();
    }
    // Let the flusher thread observe the stop and release the files.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (outbox, _stop) = start(config(dir.path()));
    assert_eq!(outbox.pending_events(), 300);
    outbox.append(vec![record(300, 1000)]).await.unwrap();
    let shipped = drain(&outbox);
    assert_eq!(
        shipped,
        (0..301).map(|n| record(n, 1000)).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn drained_segments_are_deleted_so_disk_use_returns_to_its_floor() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.segment_max_bytes = 1 << 20;
    let (outbox, _stop) = start(config);
    let floor = outbox.disk_bytes();
    for n in 0..2_000 {
        outbox.append(vec![record(n, 4000)]).await.unwrap();
    }
    let peak = outbox.disk_bytes();
    assert!(outbox.segment_count() > 5);
    drain(&outbox);
    let after = outbox.disk_bytes();
    assert_eq!(outbox.segment_count(), 1);
    assert!(
        after < floor + (peak - floor) / 10,
        "disk use after drain ({after}) should be near the floor ({floor}), peak was {peak}"
    );
}

#[tokio::test]
async fn an_unopenable_segment_is_quarantined_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (outbox, stop) = start(config(dir.path()));
        outbox.append(vec![record(1, 100)]).await.unwrap();
        stop.cancel();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Corrupt every file of the segment the record went to.
    let segments = segment::list(&dir.path().join(SEGMENTS_DIR)).unwrap();
    for (_, path) in &segments {
        for file in std::fs::read_dir(path).unwrap().flatten() {
            if file.path().is_file() {
                std::fs::write(file.path(), b"this is not a sled file").unwrap();
            }
        }
    }
    let metrics = Metrics::new();
    let outbox = Outbox::open(config(dir.path()), metrics.clone()).unwrap();
    assert_eq!(outbox.pending_events(), 0);
    assert_eq!(metrics.outbox_segments_quarantined.get(), 1);
    let aside: Vec<String> = dir
        .path()
        .join(QUARANTINE_DIR)
        .read_dir()
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        aside
            .iter()
            .any(|name| name.starts_with("seg-") && name.ends_with("-unreadable")),
        "{aside:?}"
    );
}

/// A quarantined record leaves the outbox and is kept, with its reason, in
/// the quarantine database, which is opened only when first needed.
#[tokio::test]
async fn a_quarantined_record_is_removed_kept_aside_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let outbox = Outbox::open(config(dir.path()), metrics.clone()).unwrap();
    let records = dir.path().join(QUARANTINE_DIR).join("records");
    assert!(!records.exists(), "not opened before a record needs it");
    let stop = CancellationToken::new();
    let flusher = tokio::spawn(run_flusher(outbox.clone(), stop.clone()));
    outbox
        .append(vec![record(1, 10), record(2, 10)])
        .await
        .unwrap();
    let batch = outbox.next_batch(10, 1 << 20).unwrap().unwrap();
    outbox
        .quarantine(batch.segment_id, &batch.records[0], "undecodable")
        .unwrap();
    assert_eq!(metrics.outbox_quarantined.get(), 1);
    assert_eq!(drain(&outbox), vec![record(2, 10)]);
    stop.cancel();
    flusher.await.unwrap();
    drop(outbox);

    let kept = sled::open(&records).unwrap();
    let (key, value) = kept.iter().next().unwrap().unwrap();
    assert_eq!(&key[8..], b"undecodable");
    assert_eq!(value.as_ref(), record(1, 10).as_ref());
}

#[tokio::test]
async fn concurrent_appends_share_flushes_and_all_become_durable() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let outbox = Outbox::open(config(dir.path()), metrics.clone()).unwrap();
    tokio::spawn(run_flusher(outbox.clone(), CancellationToken::new()));
    let tasks: Vec<_> = (0..200)
        .map(|n| {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.append(vec![record(n, 50)]).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(drain(&outbox).len(), 200);
    let flushes = metrics.flush_batch_size.get_sample_count();
    // On this single-threaded test runtime all 200 appends are waiting
    // before the flusher first runs, so they must share a handful of flushes.
    assert!(
        (1..100).contains(&flushes),
        "200 concurrent appends took {flushes} flushes: group commit is not sharing them"
    );
}

#[tokio::test]
async fn appends_are_refused_after_stop_accepting() {
    let dir = tempfile::tempdir().unwrap();
    let (outbox, _stop) = start(config(dir.path()));
    outbox.stop_accepting();
    let refused = outbox.append(vec![record(1, 10)]).await;
    assert!(matches!(refused, Err(AppendError::ShuttingDown)));
}

#[tokio::test]
async fn unsafe_mode_answers_before_the_write_and_ships_what_it_answered() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.durability = Durability::UnsafeAckBeforeFlush;
    let metrics = Metrics::new();
    // No flusher yet: an fsync-mode append would wait for it.
    let outbox = Outbox::open(config, metrics.clone()).unwrap();
    outbox.append(vec![record(1, 10)]).await.unwrap();
    assert!(
        outbox.next_batch(10, 1 << 20).unwrap().is_none(),
        "answered while still queued"
    );
    let stop = CancellationToken::new();
    let flusher = tokio::spawn(run_flusher(outbox.clone(), stop.clone()));
    stop.cancel();
    flusher.await.unwrap();
    assert_eq!(metrics.flush_batch_size.get_sample_count(), 0, "no fsync");
    assert_eq!(drain(&outbox), vec![record(1, 10)]);
}

/// Issue 14: a group commit is one sled record; the shipper's batches cut
/// across groups, and deleting part of a group keeps the rest.
#[tokio::test]
async fn a_group_commit_is_one_record_and_partial_deletes_keep_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let outbox = Outbox::open(config(dir.path()), metrics.clone()).unwrap();
    // All 30 appends queue before the flusher first runs.
    let appends: Vec<_> = (0..30)
        .map(|n| {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.append(vec![record(n, 100)]).await })
        })
        .collect();
    tokio::task::yield_now().await;
    tokio::spawn(run_flusher(outbox.clone(), CancellationToken::new()));
    for append in appends {
        append.await.unwrap().unwrap();
    }
    assert_eq!(metrics.flush_batch_size.get_sample_count(), 1);
    let active = Arc::clone(&outbox.layout().active);
    assert_eq!(active.sled_records(), 1, "30 calls, one sled record");

    let first = outbox.next_batch(7, 1 << 20).unwrap().unwrap();
    assert_eq!(first.records.len(), 7);
    outbox.remove(first.segment_id, &first.records).unwrap();
    assert_eq!(active.sled_records(), 1, "the rest of the group stays");
    assert_eq!(outbox.pending_events(), 23);
    let rest = drain(&outbox);
    assert_eq!(rest, (7..30).map(|n| record(n, 100)).collect::<Vec<_>>());
    assert_eq!(active.sled_records(), 0);
    assert_eq!(outbox.pending_bytes(), 0);
}

/// Segments written by earlier versions (one sled record per call, 8-byte
/// keys) are still recovered, shipped and deleted after an upgrade.
#[tokio::test]
async fn records_of_the_one_record_per_call_layout_are_still_shipped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let old = sled::open(dir.path().join(SEGMENTS_DIR).join("seg-0000000000000001")).unwrap();
        for n in 1..=5u64 {
            old.insert(n.to_be_bytes(), record(n as usize, 50).as_ref())
                .unwrap();
        }
        old.flush().unwrap();
    }
    let (outbox, _stop) = start(config(dir.path()));
    assert_eq!(outbox.pending_events(), 5);
    outbox.append(vec![record(6, 50)]).await.unwrap();
    let shipped = drain(&outbox);
    assert_eq!(
        shipped,
        (1..=6).map(|n| record(n, 50)).collect::<Vec<_>>(),
        "old records first, in order, then the new one"
    );
    assert_eq!(outbox.pending_events(), 0);
}

/// Issue 14: a batch read from the active segment, acknowledged after that
/// segment was sealed and closed, is really deleted: it never ships again,
/// not now and not after a restart.
#[tokio::test]
async fn acknowledged_records_of_a_closed_segment_are_removed_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let (outbox, stop) = start(config(dir.path()));
    for n in 0..10 {
        outbox.append(vec![record(n, 1000)]).await.unwrap();
    }
    let in_flight = outbox.next_batch(100, 1 << 20).unwrap().unwrap();
    assert_eq!(in_flight.records.len(), 10);
    // Enough to seal (and close) the segment the batch came from.
    for n in 10..90 {
        outbox.append(vec![record(n, 1000)]).await.unwrap();
    }
    assert!(outbox.segment_count() > 1, "the first segment was sealed");
    outbox
        .remove(in_flight.segment_id, &in_flight.records)
        .unwrap();
    assert_eq!(outbox.pending_events(), 80);
    let shipped = drain(&outbox);
    assert_eq!(
        shipped,
        (10..90).map(|n| record(n, 1000)).collect::<Vec<_>>(),
        "the acknowledged records were shipped again"
    );
    stop.cancel();
    drop(outbox);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (outbox, _stop) = start(config(dir.path()));
    assert_eq!(
        outbox.pending_events(),
        0,
        "nothing comes back after a restart"
    );
    assert!(drain(&outbox).is_empty());
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "4m"), or says why not and returns
    /// `None` (mounting needs root or CAP_SYS_ADMIN).
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output();
        match mounted {
            Ok(output) if output.status.success() => Some(Tmpfs { path, _dir: dir }),
            Ok(output) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
                None
            }
            Err(error) => {
                eprintln!("SKIPPED: cannot run mount: {error}");
                None
            }
        }
    }

    /// Writes a file until the file system refuses another byte; returns
    /// its path (delete it to free the space).
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        for chunk in [64 << 10, 4 << 10, 512, 1] {
            let bytes = vec![0u8; chunk];
            while file.write_all(&bytes).is_ok() {}
        }
        // tmpfs has no delayed allocation: what was written is allocated.
        let _ = file.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
        if !matches!(unmounted, Ok(status) if status.success()) {
            eprintln!("could not unmount {}", self.path.display());
        }
    }
}

/// Issue 14: on a disk filled to the brim, appends are refused (never
/// acknowledged), rotation keeps the segment it could not flush, nothing
/// acknowledged is lost, and intake resumes once space is freed.
#[tokio::test]
async fn a_full_disk_refuses_appends_and_loses_nothing_acknowledged() {
    let Some(tmpfs) = Tmpfs::mount("6m") else {
        return;
    };
    let data = tmpfs.path.join("data");
    let mut config = config(&data);
    config.segment_max_bytes = 256 << 10;
    config.max_bytes = 1 << 30;
    let (outbox, stop) = start(config.clone());
    let mut acked = std::collections::BTreeSet::new();
    let mut refused = std::collections::BTreeSet::new();
    for n in 0..50 {
        outbox.append(vec![record(n, 1000)]).await.unwrap();
        acked.insert(n);
    }

    let filler = tmpfs.fill();
    for n in 50..1050 {
        match outbox.append(vec![record(n, 1000)]).await {
            Ok(_) => {
                acked.insert(n);
            }
            Err(AppendError::Storage(_)) => {
                refused.insert(n);
            }
            Err(other) => panic!("append {n}: {other}"),
        }
    }
    assert!(
        !refused.is_empty(),
        "a full disk must refuse appends ({} acknowledged)",
        acked.len()
    );
    eprintln!(
        "disk full: {} acknowledged, {} refused",
        acked.len(),
        refused.len()
    );

    // Space comes back (the operator, or the shipper deleting segments):
    // intake resumes.
    std::fs::remove_file(&filler).unwrap();
    for n in 2000..2100 {
        outbox.append(vec![record(n, 1000)]).await.unwrap();
        acked.insert(n);
    }

    let shipped: Vec<usize> = drain(&outbox)
        .iter()
        .map(|bytes| {
            let text = std::str::from_utf8(&bytes[7..15]).unwrap();
            text.parse().unwrap()
        })
        .collect();
    let shipped_set: std::collections::BTreeSet<usize> = shipped.iter().copied().collect();
    assert_eq!(shipped.len(), shipped_set.len(), "nothing ships twice");
    let lost: Vec<_> = acked.difference(&shipped_set).collect();
    assert!(lost.is_empty(), "acknowledged but never shipped: {lost:?}");
    let unknown: Vec<_> = shipped_set
        .iter()
        .filter(|n| !acked.contains(n) && !refused.contains(n))
        .collect();
    assert!(
        unknown.is_empty(),
        "shipped but never appended: {unknown:?}"
    );

    // The shipped records are gone for good.
    stop.cancel();
    drop(outbox);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (outbox, _stop) = start(config);
    assert_eq!(outbox.pending_events(), 0);
    drop(outbox);
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// The flusher is a thread: once it has stopped, an append is refused at
/// once instead of waiting for a group commit that will never come, and
/// what was queued before the stop was written and acknowledged.
#[tokio::test]
async fn appends_after_the_flusher_stopped_are_refused_not_left_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let (outbox, stop) = start(config(dir.path()));
    outbox.append(vec![record(1, 10)]).await.unwrap();
    stop.cancel();
    // The thread sets its stop flag when `run_flusher` lets go of it; wait
    // for the flag rather than a fixed time.
    tokio::time::timeout(Duration::from_secs(10), async {
        while !outbox.layout().flusher.stopping {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the flusher stops");
    let refused = tokio::time::timeout(Duration::from_secs(10), outbox.append(vec![record(2, 10)]))
        .await
        .expect("an append after the stop answers instead of waiting");
    assert!(
        matches!(&refused, Err(AppendError::Storage(reason)) if reason.contains("flusher stopped")),
        "{refused:?}"
    );
    assert_eq!(drain(&outbox), vec![record(1, 10)]);
}
