//! Admission of live-stream connections: at most
//! [`StreamLimits::per_user`] open streams per user and
//! [`StreamLimits::total`] in the process, so one user (or a script holding
//! a leaked token) cannot exhaust sockets and memory for everyone.
//!
//! # Promises
//!
//! * A [`Permit`] is held for the whole life of a stream; dropping it gives
//!   the slot back. The count is exact: admission and release take one lock.
//! * Nothing is kept for a user without an open stream (the per-user entry
//!   goes with their last permit).
//! * Both transports (WebSocket, SSE) are admitted here, before a WebSocket
//!   upgrade, so a refusal is a plain HTTP answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// How many live streams may be open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Per user: enough for many tabs and devices at once.
    pub per_user: usize,
    /// In this process, across users.
    pub total: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            per_user: 16,
            total: 10_000,
        }
    }
}

/// Why a stream was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("this user already has {0} live streams open, the most allowed; close one first")]
    PerUser(usize),
    #[error("the server has {0} live streams open, the most it accepts; retry later")]
    Total(usize),
}

impl Refused {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::PerUser(_) => "per_user",
            Refused::Total(_) => "total",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_user: HashMap<String, usize>,
}

/// The shared counter of open streams; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    limits: StreamLimits,
    counts: Arc<Mutex<Counts>>,
}

impl Admission {
    pub fn new(limits: StreamLimits) -> Self {
        Admission {
            limits,
            counts: Arc::default(),
        }
    }

    pub fn limits(&self) -> StreamLimits {
        self.limits
    }

    /// A slot for one more stream of `user_id`, or why not.
    pub fn admit(&self, user_id: &str) -> Result<Permit, Refused> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let open = counts.per_user.get(user_id).copied().unwrap_or(0);
        if open >= self.limits.per_user {
            return Err(Refused::PerUser(self.limits.per_user));
        }
        if counts.total >= self.limits.total {
            return Err(Refused::Total(self.limits.total));
        }
        counts.total += 1;
        *counts.per_user.entry(user_id.to_owned()).or_default() += 1;
        Ok(Permit {
            counts: self.counts.clone(),
            user_id: user_id.to_owned(),
        })
    }

    /// Open streams, and users with at least one.
    pub fn open(&self) -> (usize, usize) {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        (counts.total, counts.per_user.len())
    }
}

/// One admitted stream; its slot is given back on drop.
#[derive(Debug)]
pub struct Permit {
    counts: Arc<Mutex<Counts>>,
    user_id: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total -= 1;
        if let Some(open) = counts.per_user.get_mut(&self.user_id) {
            *open -= 1;
            if *open == 0 {
                counts.per_user.remove(&self.user_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_user_and_in_total_and_frees_on_drop() {
        let admission = Admission::new(StreamLimits {
            per_user: 2,
            total: 3,
        });
        let a1 = admission.admit("a").unwrap();
        let a2 = admission.admit("a").unwrap();
        assert_eq!(admission.admit("a").unwrap_err(), Refused::PerUser(2));
        let b1 = admission.admit("b").unwrap();
        assert_eq!(admission.admit("c").unwrap_err(), Refused::Total(3));
        assert_eq!(admission.open(), (3, 2));
        drop(a1);
        let c1 = admission.admit("c").unwrap();
        drop((a2, b1, c1));
        assert_eq!(admission.open(), (0, 0), "nothing kept once all closed");
    }
}
