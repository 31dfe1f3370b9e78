//! Live fan-out of committed inbox changes to the connections of each user.
//!
//! One `tokio::sync::broadcast` channel per user with at least one
//! subscriber; publishing to a user nobody listens to costs a map lookup.
//! A subscriber that falls more than [`BUFFER`] changes behind gets
//! `Lagged` from its receiver and should resume from the change log with
//! the last sequence it handled, so nothing is lost, only re-read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;

use super::Change;

/// Changes buffered per user for slow subscribers.
pub const BUFFER: usize = 256;

#[derive(Debug, Clone, Default)]
pub struct Hub {
    users: Arc<Mutex<HashMap<String, broadcast::Sender<Change>>>>,
}

impl Hub {
    pub fn subscribe(&self, user_id: &str) -> broadcast::Receiver<Change> {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        users
            .entry(user_id.to_owned())
            .or_insert_with(|| broadcast::channel(BUFFER).0)
            .subscribe()
    }

    /// Sends `change` to the user's subscribers; forgets users whose last
    /// subscriber went away.
    pub fn publish(&self, user_id: &str, change: &Change) {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = users.get(user_id)
            && sender.send(change.clone()).is_err()
        {
            users.remove(user_id);
        }
    }

    /// Users with at least one live subscriber (for metrics).
    pub fn users(&self) -> usize {
        self.users
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|sender| sender.receiver_count() > 0)
            .count()
    }
}
