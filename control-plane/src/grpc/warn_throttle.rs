//! At most one warning per interval for what anyone who can reach the
//! port may repeat at will: an agent refused for its token, a failed TLS
//! handshake. The first one is logged at once; then one line per
//! interval, saying how many like it were left out since the line before,
//! so the log keeps the signal without a client being able to fill the
//! disk with it. Metrics still count every one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a throttled warning may be written.
pub const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// One kind of warning's throttle (a `static` next to the warning).
#[derive(Debug)]
pub struct WarnThrottle {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    last: Option<Instant>,
    left_out: u64,
}

impl WarnThrottle {
    pub const fn new(interval: Duration) -> Self {
        WarnThrottle {
            interval,
            state: Mutex::new(State {
                last: None,
                left_out: 0,
            }),
        }
    }

    /// Whether to write the warning at `now`: `Some(n)` when it is due,
    /// `n` being how many were left out since the last one written;
    /// `None` (counted) when one was written less than an interval ago.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = state
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if due {
            state.last = Some(now);
            Some(std::mem::take(&mut state.left_out))
        } else {
            state.left_out += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_written_then_one_per_interval_with_the_count_left_out() {
        let throttle = WarnThrottle::new(Duration::from_secs(60));
        let start = Instant::now();
        assert_eq!(throttle.admit(start), Some(0));
        for second in 1..60 {
            assert_eq!(throttle.admit(start + Duration::from_secs(second)), None);
        }
        assert_eq!(throttle.admit(start + Duration::from_secs(60)), Some(59));
        assert_eq!(throttle.admit(start + Duration::from_secs(61)), None);
        // A quiet spell: the next one is written at once, nothing left out
        // but the one just counted.
        assert_eq!(throttle.admit(start + Duration::from_secs(600)), Some(1));
        assert_eq!(throttle.admit(start + Duration::from_secs(900)), Some(0));
    }
}
