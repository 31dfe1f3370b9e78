//! When to try a failed send again, decided outside the channels from the
//! channel's classification alone ([`SendError`]).
//!
//! The schedule is data: attempt `n` (1-based) waits a uniformly random time
//! in `[0, min(max, initial * 2^(n-1))]` ("full jitter", so a provider
//! outage does not turn into synchronised retry waves). A provider's
//! `Retry-After` is a floor on that wait: we never come back earlier than
//! asked. After `max_attempts` attempts a retriable failure dead-letters;
//! permanent failures and invalid recipients fail at once.

use std::time::Duration;

use jiff::Timestamp;
use rand::Rng;

use crate::channels::SendError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Upper bound of the first retry's wait.
    pub initial: Duration,
    /// Cap on the doubling upper bound.
    pub max: Duration,
    /// Total attempts (the first send included) before dead-lettering.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// About a day of retries: 5 s doubling to 1 h, 30 attempts.
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(3600),
            max_attempts: 30,
        }
    }
}

/// What to do with a delivery after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Queue it again, not before this time.
    RetryAt(Timestamp),
    /// Give up for good: retrying would fail the same way.
    Fail,
    /// Out of attempts on a temporary failure: park it for an operator.
    DeadLetter,
}

impl RetryPolicy {
    /// The upper bound of the wait after attempt `attempt` (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(63);
        let factor = 1u64 << doublings;
        let ceiling = u32::try_from(factor)
            .ok()
            .and_then(|factor| self.initial.checked_mul(factor))
            .unwrap_or(self.max);
        ceiling.min(self.max)
    }

    /// `attempts_made` counts the attempt that just failed (so it is ≥ 1).
    pub fn decide(
        &self,
        attempts_made: u32,
        error: &SendError,
        now: Timestamp,
        rng: &mut impl Rng,
    ) -> Decision {
        let retry_after = match error {
            SendError::Permanent { .. } | SendError::InvalidRecipient { .. } => {
                return Decision::Fail;
            }
            SendError::Retriable { retry_after, .. } => *retry_after,
        };
        if attempts_made >= self.max_attempts {
            return Decision::DeadLetter;
        }
        let ceiling = self.ceiling(attempts_made);
        let jittered = Duration::from_nanos(rng.random_range(0..=duration_nanos(ceiling)));
        let wait = retry_after.map_or(jittered, |floor| jittered.max(floor));
        // A wait past the end of representable time is "never": park it.
        match now.checked_add(wait) {
            Ok(at) => Decision::RetryAt(at),
            Err(_) => Decision::DeadLetter,
        }
    }
}

fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
            max_attempts: 5,
        }
    }

    fn retriable(retry_after: Option<Duration>) -> SendError {
        SendError::Retriable {
            answer: "451 try later".into(),
            retry_after,
        }
    }

    fn wait(decision: Decision, now: Timestamp) -> Duration {
        match decision {
            Decision::RetryAt(at) => Duration::try_from(at.duration_since(now)).unwrap(),
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn ceiling_doubles_up_to_max() {
        let policy = policy();
        let ceilings: Vec<u64> = (1..=6).map(|n| policy.ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 10, 10]);
        assert_eq!(policy.ceiling(200), Duration::from_secs(10));
    }

    #[test]
    fn jitter_stays_within_the_ceiling_and_varies() {
        let policy = policy();
        let now = Timestamp::UNIX_EPOCH;
        let mut rng = StdRng::seed_from_u64(7);
        let waits: Vec<Duration> = (0..50)
            .map(|_| wait(policy.decide(3, &retriable(None), now, &mut rng), now))
            .collect();
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(4)));
        assert!(
            waits.iter().any(|w| *w != waits[0]),
            "full jitter must vary"
        );
    }

    #[test]
    fn seeded_rng_is_reproducible() {
        let policy = policy();
        let now = Timestamp::UNIX_EPOCH;
        let first = policy.decide(2, &retriable(None), now, &mut StdRng::seed_from_u64(1));
        let second = policy.decide(2, &retriable(None), now, &mut StdRng::seed_from_u64(1));
        assert_eq!(first, second);
    }

    #[test]
    fn retry_after_is_a_floor() {
        let policy = policy();
        let now = Timestamp::UNIX_EPOCH;
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..20 {
            let floor = Duration::from_secs(30);
            let decision = policy.decide(1, &retriable(Some(floor)), now, &mut rng);
            assert_eq!(wait(decision, now), floor);
        }
        // A small hint does not shorten the jittered wait below itself.
        let decision = policy.decide(1, &retriable(Some(Duration::ZERO)), now, &mut rng);
        assert!(wait(decision, now) <= Duration::from_secs(1));
    }

    #[test]
    fn out_of_attempts_dead_letters() {
        let mut rng = StdRng::seed_from_u64(0);
        let now = Timestamp::UNIX_EPOCH;
        assert!(matches!(
            policy().decide(4, &retriable(None), now, &mut rng),
            Decision::RetryAt(_)
        ));
        assert_eq!(
            policy().decide(5, &retriable(None), now, &mut rng),
            Decision::DeadLetter
        );
    }

    #[test]
    fn permanent_and_invalid_recipient_fail_at_once() {
        let mut rng = StdRng::seed_from_u64(0);
        let now = Timestamp::UNIX_EPOCH;
        let permanent = SendError::Permanent {
            answer: "550".into(),
        };
        let invalid = SendError::InvalidRecipient {
            answer: "410".into(),
        };
        assert_eq!(
            policy().decide(1, &permanent, now, &mut rng),
            Decision::Fail
        );
        assert_eq!(policy().decide(1, &invalid, now, &mut rng), Decision::Fail);
    }
}
