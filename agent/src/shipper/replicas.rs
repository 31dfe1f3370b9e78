//! Several control-plane replicas behind one [`Transport`]: pushes are
//! spread over the healthy ones, a push that fails on one is retried on the
//! next at once, and a replica that keeps failing is skipped for a while.
//!
//! # Promises
//!
//! * **Nothing is lost or counted twice.** A push returns `Ok` only with a
//!   replica's acknowledgement, and the shipper deletes from the outbox only
//!   on `Ok` (see [`super`]). A push that failed on replica A may still have
//!   been stored there (A died after its commit, before its answer); the
//!   resend to B carries the same envelope ids, and the replicas share one
//!   database that dedupes by id, so it is stored once.
//! * **Spread:** consecutive pushes start at consecutive healthy replicas
//!   (round robin), so the shipper's concurrent pushes go to different
//!   replicas.
//! * **Prompt failover:** a retriable failure (connection refused or reset,
//!   `UNAVAILABLE`, deadline, overload) moves the same push to the next
//!   healthy replica, without the shipper's backoff. Only when every healthy
//!   replica failed does the push fail (and the shipper back off). A batch
//!   the control plane refuses as invalid is not tried elsewhere: every
//!   replica would refuse it.
//! * **Ejection with backoff:** a failed replica is skipped for
//!   `eject_initial`, doubling with each further consecutive failure up to
//!   `eject_max` (and never shorter than the replica's own retry hint);
//!   once that time is over it takes pushes again, and one success makes
//!   it healthy. When every replica is ejected, each push tries the one
//!   whose ejection ends first, so one replica behaves as a single control
//!   plane always did: every retry of the shipper tries it.
//! * The set of replicas changes at run time ([`Replicas::update`], fed by
//!   the resolver); a replica that stays keeps its health.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{PushOutcome, ShipError, Transport};
use crate::outbox::Record;

/// A cheaply cloned handle on the replica set.
pub struct Replicas<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Replicas<T> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

struct Shared<T> {
    /// Never held across an await.
    state: Mutex<State<T>>,
    eject_initial: Duration,
    eject_max: Duration,
    metrics: ReplicaMetrics,
    /// Signalled when a push found no replica to try or every replica
    /// failed: the addresses may have changed, so resolve again now.
    starved: Notify,
}

struct State<T> {
    members: Vec<Member<T>>,
    /// Round-robin cursor over the healthy members.
    next: usize,
}

struct Member<T> {
    /// The replica's address (`10.0.0.7:50051`); also its metric label.
    endpoint: String,
    transport: Arc<T>,
    /// Consecutive retriable failures; 0 when healthy.
    failures: u32,
    /// Skipped until then (unless nothing else is left).
    ejected_until: Option<Instant>,
}

impl<T> Member<T> {
    fn ejected_at(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| until > now)
    }
}

impl<T: Transport> Replicas<T> {
    /// An empty set; [`Self::update`] fills it. Metrics go to `registry`.
    pub fn new(eject_initial: Duration, eject_max: Duration, registry: &Registry) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    members: Vec::new(),
                    next: 0,
                }),
                eject_initial,
                eject_max,
                metrics: ReplicaMetrics::register(registry),
                starved: Notify::new(),
            }),
        }
    }

    /// Makes `endpoints` the set of replicas: ones already present keep
    /// their transport and health, new ones get `make(endpoint)` (skipped
    /// if `None`), missing ones are dropped (pushes in flight to them
    /// finish on their own).
    pub fn update(&self, endpoints: &[String], mut make: impl FnMut(&str) -> Option<T>) {
        let mut state = self.lock();
        let mut kept: Vec<Member<T>> = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            if kept.iter().any(|member| &member.endpoint == endpoint) {
                continue;
            }
            let existing = state
                .members
                .iter()
                .position(|member| &member.endpoint == endpoint);
            match existing {
                Some(index) => kept.push(state.members.swap_remove(index)),
                None => {
                    let Some(transport) = make(endpoint) else {
                        continue;
                    };
                    tracing::info!(replica = %endpoint, "control-plane replica added");
                    kept.push(Member {
                        endpoint: endpoint.clone(),
                        transport: Arc::new(transport),
                        failures: 0,
                        ejected_until: None,
                    });
                }
            }
        }
        for gone in &state.members {
            tracing::info!(replica = %gone.endpoint, "control-plane replica removed");
            self.shared.metrics.forget(&gone.endpoint);
        }
        state.members = kept;
        self.shared
            .metrics
            .set_states(&state.members, Instant::now());
    }

    /// Resolves when a push found nothing to try, or every replica failed.
    pub async fn starved(&self) {
        self.shared.starved.notified().await;
    }

    /// The replicas of the set, in order.
    pub fn endpoints(&self) -> Vec<String> {
        let state = self.lock();
        state.members.iter().map(|m| m.endpoint.clone()).collect()
    }

    /// Which replicas to try for one push, in order: the healthy ones from
    /// the round-robin cursor on, or, with none healthy, the one whose
    /// ejection ends first.
    fn plan(&self) -> Vec<(String, Arc<T>)> {
        let mut state = self.lock();
        let now = Instant::now();
        let healthy: Vec<usize> = (0..state.members.len())
            .filter(|&index| !state.members[index].ejected_at(now))
            .collect();
        let order: Vec<usize> = if healthy.is_empty() {
            state
                .members
                .iter()
                .enumerate()
                .min_by_key(|(_, member)| member.ejected_until)
                .map(|(index, _)| index)
                .into_iter()
                .collect()
        } else {
            let start = state.next % healthy.len();
            state.next = state.next.wrapping_add(1);
            healthy[start..]
                .iter()
                .chain(&healthy[..start])
                .copied()
                .collect()
        };
        order
            .into_iter()
            .map(|index| {
                let member = &state.members[index];
                (member.endpoint.clone(), Arc::clone(&member.transport))
            })
            .collect()
    }

    /// The replica answered (`outcome`): it is healthy. A replica removed
    /// meanwhile is not counted, so its metric series stay gone.
    fn answered(&self, endpoint: &str, outcome: &str) {
        let mut state = self.lock();
        let Some(member) = state.members.iter_mut().find(|m| m.endpoint == endpoint) else {
            return;
        };
        self.shared.metrics.pushed(endpoint, outcome);
        if member.failures > 0 {
            tracing::info!(replica = %endpoint, "control-plane replica answers again");
        }
        member.failures = 0;
        member.ejected_until = None;
        self.shared
            .metrics
            .set_states(&state.members, Instant::now());
    }

    /// The replica failed a push: eject it for longer each time in a row.
    fn failed(&self, endpoint: &str, hint: Option<Duration>, error: &str) {
        let mut state = self.lock();
        let now = Instant::now();
        let Some(member) = state.members.iter_mut().find(|m| m.endpoint == endpoint) else {
            return;
        };
        self.shared.metrics.pushed(endpoint, "failed");
        member.failures = member.failures.saturating_add(1);
        let ejection = ejection(
            member.failures,
            hint,
            self.shared.eject_initial,
            self.shared.eject_max,
        );
        member.ejected_until = Some(now + ejection);
        if member.failures == 1 {
            tracing::warn!(replica = %endpoint, %error, skip_for = ?ejection, "control-plane replica failed; skipping it");
        } else {
            tracing::debug!(replica = %endpoint, %error, failures = member.failures, skip_for = ?ejection, "control-plane replica failed again");
        }
        self.shared.metrics.set_states(&state.members, now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        // A panic while holding it leaves consistent data (each method
        // changes one member at a time), so poisoning is ignored.
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<T: Transport> Transport for Replicas<T> {
    async fn push(&self, agent_id: &str, records: &[Record]) -> Result<PushOutcome, ShipError> {
        let plan = self.plan();
        let metrics = &self.shared.metrics;
        let mut last_error = None;
        for (attempt, (endpoint, transport)) in plan.iter().enumerate() {
            if attempt > 0 {
                metrics.failovers.inc();
            }
            match transport.push(agent_id, records).await {
                Ok(outcome) => {
                    self.answered(endpoint, "ok");
                    return Ok(outcome);
                }
                Err(refused @ ShipError::BatchRefused { .. }) => {
                    self.answered(endpoint, "refused");
                    return Err(refused);
                }
                Err(ShipError::Retriable {
                    message,
                    retry_after,
                }) => {
                    self.failed(endpoint, retry_after, &message);
                    last_error = Some(ShipError::Retriable {
                        message: format!("{endpoint}: {message}"),
                        retry_after,
                    });
                }
                // Another replica may hold newer settings (a token being
                // rotated): try it, and report the refusal if none takes it.
                Err(ShipError::Unauthenticated { message }) => {
                    self.failed(endpoint, None, &message);
                    last_error = Some(ShipError::Unauthenticated {
                        message: format!("{endpoint}: {message}"),
                    });
                }
            }
        }
        self.shared.starved.notify_one();
        Err(last_error.unwrap_or_else(|| ShipError::Retriable {
            message: "no control-plane replica to push to: NUDGE_AGENT_CONTROL_PLANE has not \
                      resolved to any address yet"
                .into(),
            retry_after: None,
        }))
    }
}

/// How long a replica is skipped after its `failures`-th failure in a row:
/// `initial`, doubling each time, at most `max`, and no less than the
/// replica's own hint (itself at most `max`).
fn ejection(failures: u32, hint: Option<Duration>, initial: Duration, max: Duration) -> Duration {
    let doubling = 1u32
        .checked_shl(failures.saturating_sub(1).min(31))
        .unwrap_or(u32::MAX);
    let backoff = initial.saturating_mul(doubling).min(max);
    match hint {
        Some(hint) => backoff.max(hint.min(max)),
        None => backoff,
    }
}

/// Per-replica metrics, next to the code they measure. The replica label
/// is an address; there are few, and a removed replica's series go with it.
struct ReplicaMetrics {
    /// Push attempts by replica and outcome (`ok`, `refused`, `failed`).
    pushes: IntCounterVec,
    /// Replicas by state (`healthy`, `ejected`), as of the last change.
    replicas: IntGaugeVec,
    /// Pushes moved to another replica after a failure.
    failovers: IntCounter,
}

const OUTCOMES: [&str; 3] = ["ok", "refused", "failed"];

impl ReplicaMetrics {
    fn register(registry: &Registry) -> Self {
        let metrics = ReplicaMetrics {
            pushes: IntCounterVec::new(
                Opts::new(
                    "nudge_agent_replica_pushes_total",
                    "Ingest.Push attempts by control-plane replica (its address) and outcome: ok, refused (the batch is invalid), failed (retried on another replica).",
                ),
                &["replica", "outcome"],
            )
            .expect("valid metric"),
            replicas: IntGaugeVec::new(
                Opts::new(
                    "nudge_agent_replicas",
                    "Control-plane replicas known to the agent, by state: healthy, or ejected (skipped after failures until a backoff ends).",
                ),
                &["state"],
            )
            .expect("valid metric"),
            failovers: IntCounter::new(
                "nudge_agent_replica_failovers_total",
                "Pushes retried on another control-plane replica after one failed.",
            )
            .expect("valid metric"),
        };
        for state in ["healthy", "ejected"] {
            metrics.replicas.with_label_values(&[state]);
        }
        let _ = registry.register(Box::new(metrics.pushes.clone()));
        let _ = registry.register(Box::new(metrics.replicas.clone()));
        let _ = registry.register(Box::new(metrics.failovers.clone()));
        metrics
    }

    fn pushed(&self, endpoint: &str, outcome: &str) {
        self.pushes.with_label_values(&[endpoint, outcome]).inc();
    }

    fn forget(&self, endpoint: &str) {
        for outcome in OUTCOMES {
            let _ = self.pushes.remove_label_values(&[endpoint, outcome]);
        }
    }

    fn set_states<T>(&self, members: &[Member<T>], now: Instant) {
        let ejected = members.iter().filter(|m| m.ejected_at(now)).count();
        self.replicas
            .with_label_values(&["healthy"])
            .set((members.len() - ejected) as i64);
        self.replicas
            .with_label_values(&["ejected"])
            .set(ejected as i64);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A replica that answers as told and counts its pushes.
    #[derive(Clone, Default)]
    struct Fake {
        name: String,
        /// `Some(true)`: down (retriable), `Some(false)`: refuses batches.
        failing: Arc<Mutex<Option<bool>>>,
        pushes: Arc<Mutex<usize>>,
    }

    impl Transport for Fake {
        async fn push(&self, _: &str, records: &[Record]) -> Result<PushOutcome, ShipError> {
            *self.pushes.lock().unwrap() += 1;
            match *self.failing.lock().unwrap() {
                Some(true) => Err(ShipError::Retriable {
                    message: format!("{} is down", self.name),
                    retry_after: None,
                }),
                Some(false) => Err(ShipError::BatchRefused {
                    message: "invalid".into(),
                }),
                None => Ok(PushOutcome {
                    accepted: records.len(),
                    ..PushOutcome::default()
                }),
            }
        }
    }

    struct Pool {
        replicas: Replicas<Fake>,
        fakes: HashMap<String, Fake>,
        registry: Registry,
    }

    impl Pool {
        fn new(names: &[&str]) -> Self {
            Self::with_ejection(names, Duration::from_secs(1))
        }

        /// Ejections last `eject` (no doubling): long ones show skipping,
        /// short ones the return, without a clock to advance.
        fn with_ejection(names: &[&str], eject: Duration) -> Self {
            let registry = Registry::new();
            let replicas = Replicas::new(eject, eject, &registry);
            let mut pool = Pool {
                replicas,
                fakes: HashMap::new(),
                registry,
            };
            pool.set(names);
            pool
        }

        fn set(&mut self, names: &[&str]) {
            let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            let fakes = &mut self.fakes;
            self.replicas.update(&names, |name| {
                let fake = Fake {
                    name: name.to_owned(),
                    ..Fake::default()
                };
                fakes.insert(name.to_owned(), fake.clone());
                Some(fake)
            });
        }

        fn down(&self, name: &str, down: bool) {
            *self.fakes[name].failing.lock().unwrap() = down.then_some(true);
        }

        fn pushes(&self, name: &str) -> usize {
            *self.fakes[name].pushes.lock().unwrap()
        }

        async fn push(&self) -> Result<PushOutcome, ShipError> {
            self.replicas.push("agent", &[]).await
        }

        fn metric(&self, name: &str, labels: &[(&str, &str)]) -> i64 {
            self.registry
                .gather()
                .iter()
                .filter(|family| family.name() == name)
                .flat_map(|family| family.get_metric())
                .find(|metric| {
                    labels.iter().all(|(k, v)| {
                        metric
                            .get_label()
                            .iter()
                            .any(|l| l.name() == *k && l.value() == *v)
                    })
                })
                .map(|metric| {
                    metric.get_gauge().get_value() as i64 + metric.get_counter().get_value() as i64
                })
                .unwrap_or(-1)
        }
    }

    #[tokio::test]
    async fn pushes_are_spread_over_healthy_replicas() {
        let pool = Pool::new(&["a", "b", "c"]);
        for _ in 0..9 {
            pool.push().await.unwrap();
        }
        for name in ["a", "b", "c"] {
            assert_eq!(pool.pushes(name), 3, "{name}");
        }
        assert_eq!(
            pool.metric("nudge_agent_replicas", &[("state", "healthy")]),
            3
        );
        assert_eq!(
            pool.metric(
                "nudge_agent_replica_pushes_total",
                &[("replica", "b"), ("outcome", "ok")]
            ),
            3
        );
    }

    #[tokio::test]
    async fn a_failed_push_moves_to_another_replica_and_the_failing_one_is_skipped() {
        let pool = Pool::with_ejection(&["a", "b"], Duration::from_secs(3600));
        pool.down("a", true);
        for _ in 0..4 {
            pool.push().await.expect("b takes every push");
        }
        assert_eq!(pool.pushes("a"), 1, "tried once, then ejected");
        assert_eq!(pool.pushes("b"), 4);
        assert_eq!(pool.metric("nudge_agent_replica_failovers_total", &[]), 1);
        assert_eq!(
            pool.metric("nudge_agent_replicas", &[("state", "ejected")]),
            1
        );
        assert_eq!(
            pool.metric(
                "nudge_agent_replica_pushes_total",
                &[("replica", "a"), ("outcome", "failed")]
            ),
            1
        );
    }

    #[tokio::test]
    async fn an_ejected_replica_is_tried_again_when_its_ejection_ends() {
        let pool = Pool::with_ejection(&["a", "b"], Duration::from_millis(1));
        pool.down("a", true);
        pool.push().await.unwrap();
        pool.push().await.unwrap();
        assert_eq!(pool.pushes("a"), 1);
        pool.down("a", false);
        tokio::time::sleep(Duration::from_millis(20)).await;
        for _ in 0..4 {
            pool.push().await.unwrap();
        }
        assert_eq!(pool.pushes("a"), 3, "healthy again: its share of pushes");
        assert_eq!(
            pool.metric("nudge_agent_replicas", &[("state", "healthy")]),
            2
        );
    }

    #[test]
    fn ejection_doubles_up_to_the_max_and_honours_the_hint() {
        let (initial, max) = (Duration::from_secs(1), Duration::from_secs(8));
        let skips: Vec<u64> = (1..=6)
            .map(|failures| ejection(failures, None, initial, max).as_secs())
            .collect();
        assert_eq!(skips, [1, 2, 4, 8, 8, 8]);
        assert_eq!(ejection(u32::MAX, None, initial, max), max);
        let hint = Some(Duration::from_secs(5));
        assert_eq!(ejection(1, hint, initial, max).as_secs(), 5);
        let long_hint = Some(Duration::from_secs(60));
        assert_eq!(ejection(1, long_hint, initial, max), max);
    }

    #[tokio::test]
    async fn with_every_replica_down_the_push_fails_and_each_retry_probes_one() {
        let pool = Pool::new(&["a", "b"]);
        pool.down("a", true);
        pool.down("b", true);
        let error = pool.push().await.unwrap_err();
        assert!(matches!(error, ShipError::Retriable { .. }), "{error}");
        assert_eq!((pool.pushes("a"), pool.pushes("b")), (1, 1));
        // Both ejected: the next push tries one, not none.
        pool.push().await.unwrap_err();
        assert_eq!(pool.pushes("a") + pool.pushes("b"), 3);
        pool.down("b", false);
        // Whichever is probed, the shipper's retries reach b.
        let mut ok = false;
        for _ in 0..4 {
            ok |= pool.push().await.is_ok();
        }
        assert!(
            ok,
            "a replica that recovers is found while all were ejected"
        );
    }

    #[tokio::test]
    async fn one_replica_is_tried_on_every_push_like_a_single_control_plane() {
        let pool = Pool::new(&["only"]);
        pool.down("only", true);
        for _ in 0..3 {
            pool.push().await.unwrap_err();
        }
        assert_eq!(pool.pushes("only"), 3, "no push skips the only replica");
        pool.down("only", false);
        pool.push().await.unwrap();
    }

    #[tokio::test]
    async fn a_refused_batch_is_not_sent_to_another_replica() {
        let pool = Pool::new(&["a", "b"]);
        for fake in pool.fakes.values() {
            *fake.failing.lock().unwrap() = Some(false);
        }
        let error = pool.push().await.unwrap_err();
        assert!(matches!(error, ShipError::BatchRefused { .. }), "{error}");
        assert_eq!(pool.pushes("a") + pool.pushes("b"), 1);
        assert_eq!(
            pool.metric("nudge_agent_replicas", &[("state", "healthy")]),
            2
        );
    }

    #[tokio::test]
    async fn an_empty_set_fails_retriably_and_asks_for_a_resolution() {
        let pool = Pool::new(&[]);
        let error = pool.push().await.unwrap_err();
        assert!(error.to_string().contains("resolved"), "{error}");
        tokio::time::timeout(Duration::from_secs(5), pool.replicas.starved())
            .await
            .expect("the resolver is woken");
    }

    #[tokio::test]
    async fn an_update_keeps_known_replicas_with_their_health_and_drops_the_rest() {
        let mut pool = Pool::with_ejection(&["a", "b"], Duration::from_secs(3600));
        pool.down("a", true);
        pool.push().await.unwrap();
        pool.push().await.unwrap();
        let a_pushes = pool.pushes("a");
        pool.set(&["a", "c"]);
        assert_eq!(pool.replicas.endpoints(), ["a", "c"]);
        assert_eq!(
            pool.metric("nudge_agent_replicas", &[("state", "ejected")]),
            1
        );
        assert_eq!(
            pool.metric(
                "nudge_agent_replica_pushes_total",
                &[("replica", "b"), ("outcome", "ok")]
            ),
            -1,
            "a removed replica's series are gone"
        );
        for _ in 0..3 {
            pool.push().await.unwrap();
        }
        assert_eq!(pool.pushes("a"), a_pushes, "still ejected after the update");
        assert_eq!(pool.pushes("c"), 3);
    }
}
