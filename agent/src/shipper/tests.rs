//! The shipper against an in-memory transport: the batching, bisecting and
//! retry logic, without a network. The real gRPC path is covered end to end
//! in `tests/`.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::*;
use crate::outbox::{OutboxConfig, run_flusher};

/// A transport that refuses any batch holding a record equal to `poison`,
/// fails the first `fail_first` calls as retriable, and records what it got.
#[derive(Clone, Default)]
struct FakeTransport {
    poison: Option<Bytes>,
    fail_first: Arc<Mutex<usize>>,
    /// Calls answered UNAUTHENTICATED before the retriable failures.
    unauthenticated_first: Arc<Mutex<usize>>,
    received: Arc<Mutex<Vec<Bytes>>>,
    calls: Arc<Mutex<usize>>,
}

impl Transport for FakeTransport {
    async fn push(&self, _agent_id: &str, records: &[Record]) -> Result<PushOutcome, ShipError> {
        *self.calls.lock().unwrap() += 1;
        {
            let mut refused = self.unauthenticated_first.lock().unwrap();
            if *refused > 0 {
                *refused -= 1;
                return Err(ShipError::Unauthenticated {
                    message: "wrong token".into(),
                });
            }
        }
        {
            let mut fail_first = self.fail_first.lock().unwrap();
            if *fail_first > 0 {
                *fail_first -= 1;
                return Err(ShipError::Retriable {
                    message: "down".into(),
                    retry_after: None,
                });
            }
        }
        if records
            .iter()
            .any(|r| Some(&r.bytes) == self.poison.as_ref())
        {
            return Err(ShipError::BatchRefused {
                message: "poison".into(),
            });
        }
        self.received
            .lock()
            .unwrap()
            .extend(records.iter().map(|r| r.bytes.clone()));
        Ok(PushOutcome {
            accepted: records.len(),
            ..PushOutcome::default()
        })
    }
}

fn config() -> ShipperConfig {
    ShipperConfig {
        agent_id: "test".into(),
        in_flight: 1,
        max_events: 8,
        max_bytes: 1 << 20,
        linger: Duration::ZERO,
        retry_initial: Duration::from_millis(1),
        retry_max: Duration::from_millis(5),
        timeout: Duration::from_secs(1),
    }
}

async fn outbox_with(dir: &std::path::Path, records: Vec<Bytes>) -> (Outbox, Metrics) {
    let metrics = Metrics::new();
    let outbox = Outbox::open(OutboxConfig::new(dir), metrics.clone()).unwrap();
    tokio::spawn(run_flusher(outbox.clone(), CancellationToken::new()));
    for record in records {
        outbox.append(vec![record]).await.unwrap();
    }
    (outbox, metrics)
}

/// Runs the shipper until the outbox is empty (draining mode).
async fn ship_all(outbox: &Outbox, transport: FakeTransport, metrics: &Metrics) {
    let draining = CancellationToken::new();
    draining.cancel();
    run_shipper(
        outbox.clone(),
        transport,
        config(),
        metrics.clone(),
        draining,
        CancellationToken::new(),
    )
    .await;
}

fn numbered(n: usize) -> Bytes {
    Bytes::from(format!("event-{n}"))
}

#[tokio::test]
async fn everything_is_shipped_once_in_order_and_then_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<Bytes> = (0..50).map(numbered).collect();
    let (outbox, metrics) = outbox_with(dir.path(), records.clone()).await;
    let transport = FakeTransport::default();
    ship_all(&outbox, transport.clone(), &metrics).await;
    assert_eq!(*transport.received.lock().unwrap(), records);
    assert_eq!(outbox.pending_events(), 0);
    assert_eq!(metrics.events_shipped.get(), 50);
    assert_eq!(*transport.calls.lock().unwrap(), 7, "batches of at most 8");
}

#[tokio::test]
async fn concurrent_pushes_ship_everything_once() {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<Bytes> = (0..50).map(numbered).collect();
    let (outbox, metrics) = outbox_with(dir.path(), records.clone()).await;
    let transport = FakeTransport::default();
    let draining = CancellationToken::new();
    draining.cancel();
    let config = ShipperConfig {
        in_flight: 3,
        ..config()
    };
    run_shipper(
        outbox.clone(),
        transport.clone(),
        config,
        metrics.clone(),
        draining,
        CancellationToken::new(),
    )
    .await;
    let mut received = transport.received.lock().unwrap().clone();
    received.sort();
    let mut expected = records;
    expected.sort();
    assert_eq!(received, expected);
    assert_eq!(outbox.pending_events(), 0);
    assert_eq!(*transport.calls.lock().unwrap(), 7, "batches of at most 8");
}

#[test]
fn split_respects_count_and_bytes() {
    let window = Batch {
        segment_id: 1,
        records: (0..10)
            .map(|seq| Record {
                seq,
                bytes: Bytes::from(vec![0; 100]),
            })
            .collect(),
    };
    let sizes: Vec<usize> = split(window.clone(), 4, 1 << 20)
        .iter()
        .map(|b| b.records.len())
        .collect();
    assert_eq!(sizes, [4, 4, 2]);
    let sizes: Vec<usize> = split(window, 100, 250)
        .iter()
        .map(|b| b.records.len())
        .collect();
    assert_eq!(sizes, [2, 2, 2, 2, 2]);
}

#[tokio::test]
async fn retriable_failures_keep_the_records_and_retry() {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<Bytes> = (0..5).map(numbered).collect();
    let (outbox, metrics) = outbox_with(dir.path(), records.clone()).await;
    let transport = FakeTransport {
        fail_first: Arc::new(Mutex::new(3)),
        ..FakeTransport::default()
    };
    ship_all(&outbox, transport.clone(), &metrics).await;
    assert_eq!(*transport.received.lock().unwrap(), records);
    assert_eq!(
        metrics
            .ship_failures
            .with_label_values(&["retriable"])
            .get(),
        3
    );
}

#[tokio::test]
async fn a_poison_record_is_isolated_and_quarantined_and_the_rest_ships() {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<Bytes> = (0..20).map(numbered).collect();
    let (outbox, metrics) = outbox_with(dir.path(), records.clone()).await;
    let transport = FakeTransport {
        poison: Some(numbered(13)),
        ..FakeTransport::default()
    };
    ship_all(&outbox, transport.clone(), &metrics).await;
    let expected: Vec<Bytes> = records.into_iter().filter(|r| r != &numbered(13)).collect();
    assert_eq!(*transport.received.lock().unwrap(), expected);
    assert_eq!(metrics.outbox_quarantined.get(), 1);
    assert_eq!(outbox.pending_events(), 0);
}

#[tokio::test]
async fn refused_credentials_keep_every_record_until_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<Bytes> = (0..20).map(numbered).collect();
    let (outbox, metrics) = outbox_with(dir.path(), records.clone()).await;
    let transport = FakeTransport {
        unauthenticated_first: Arc::new(Mutex::new(5)),
        ..FakeTransport::default()
    };
    let draining = CancellationToken::new();
    let stop = CancellationToken::new();
    let shipper = tokio::spawn(run_shipper(
        outbox.clone(),
        transport.clone(),
        config(),
        metrics.clone(),
        draining.clone(),
        stop.clone(),
    ));
    // While refused, nothing leaves the outbox and the gauge says why.
    while *transport.unauthenticated_first.lock().unwrap() > 0 {
        assert_eq!(outbox.pending_events(), 20);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let refused = metrics
        .ship_failures
        .with_label_values(&["unauthenticated"])
        .get();
    assert_eq!(refused, 5);
    draining.cancel();
    shipper.await.unwrap();
    assert_eq!(*transport.received.lock().unwrap(), records);
    assert_eq!(outbox.pending_events(), 0);
    assert_eq!(metrics.events_shipped.get(), 20);
    assert_eq!(
        metrics.control_plane_unauthenticated.get(),
        0,
        "an accepted push clears it"
    );
}
