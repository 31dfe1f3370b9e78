//! Time for the delivery queue, behind a trait so tests move schedule time
//! by hand instead of sleeping through quiet hours or retry backoffs.

use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};

/// Where the dispatcher reads "now" from: due times, retry times and
/// latencies are all computed from it.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that only moves when told to; public so end-to-end tests can
/// drive quiet hours and retries too.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Timestamp>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            now: Mutex::new(start),
        }
    }

    pub fn set(&self, now: Timestamp) {
        *self.now.lock().unwrap() = now;
    }

    pub fn advance(&self, by: SignedDuration) {
        let mut now = self.now.lock().unwrap();
        *now = now.saturating_add(by).unwrap_or(*now);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap()
    }
}
