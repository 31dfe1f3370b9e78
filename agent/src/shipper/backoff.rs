//! Retry timing for shipments: exponential backoff with full jitter, never
//! shorter than the control plane's own hint.
//!
//! Full jitter (a uniform delay between zero and the exponential cap) keeps a
//! fleet of agents that lost the control plane at the same moment from
//! coming back in lock step.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// Consecutive failures so far.
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            failures: 0,
        }
    }

    /// The delay before the next attempt after one more failure.
    pub fn next_delay(&mut self, hint: Option<Duration>) -> Duration {
        let cap = self.cap();
        self.failures = self.failures.saturating_add(1);
        let jittered = cap.mul_f64(rand::rng().random::<f64>());
        match hint {
            Some(hint) => jittered.max(hint.min(self.max)),
            None => jittered,
        }
    }

    /// The upper bound of the next delay: `initial * 2^failures`, at most `max`.
    pub fn cap(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_up_to_the_max_and_stay_within_the_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let caps: Vec<Duration> = (0..8)
            .map(|_| {
                let cap = backoff.cap();
                let delay = backoff.next_delay(None);
                assert!(delay <= cap);
                cap
            })
            .collect();
        assert_eq!(caps[0], Duration::from_millis(100));
        assert_eq!(caps[1], Duration::from_millis(200));
        assert_eq!(caps[4], Duration::from_millis(1600));
        assert_eq!(caps[7], Duration::from_secs(2));
        backoff.reset();
        assert_eq!(backoff.cap(), Duration::from_millis(100));
    }

    #[test]
    fn the_control_planes_hint_is_a_floor_bounded_by_max() {
        let mut backoff = Backoff::new(Duration::from_millis(1), Duration::from_secs(5));
        assert!(backoff.next_delay(Some(Duration::from_secs(3))) >= Duration::from_secs(3));
        assert!(backoff.next_delay(Some(Duration::from_secs(60))) <= Duration::from_secs(5));
    }
}
