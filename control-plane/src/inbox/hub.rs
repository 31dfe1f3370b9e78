//! Live fan-out of committed inbox changes to the connections of each user.
//!
//! One `tokio::sync::broadcast` channel per user with at least one
//! subscriber; publishing to a user nobody listens to costs a map lookup.
//! A subscriber that falls more than [`BUFFER`] changes behind gets
//! `Lagged` from its receiver and should resume from the change log with
//! the last sequence it handled, so nothing is lost, only re-read.
//!
//! Changes another process committed (PostgreSQL replicas) are not carried
//! here: the hub only passes on [`Live::Elsewhere`], "the log has changes
//! up to this seq", and each subscriber reads the log after the last seq
//! it handled (see `store` for why that keeps order and loses nothing).
//!
//! # Promise
//!
//! A user's channel (≈ [`BUFFER`] slots) is held exactly while a
//! [`Subscription`] of theirs lives: the last one to drop frees it. So
//! memory follows open connections, not every user who ever opened one.
//! Notices for users without a subscription cost a map lookup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;

use super::Change;

/// Changes buffered per user for slow subscribers.
pub const BUFFER: usize = 256;

/// What a subscriber hears.
#[derive(Debug, Clone, PartialEq)]
pub enum Live {
    /// A change this process committed, published in the user's seq order
    /// (boxed: every subscriber gets a clone of the message).
    Change(Box<Change>),
    /// Changes were committed elsewhere (another process): the log holds
    /// the user's changes up to `upto`; `None` when how far is unknown
    /// (the listener reconnected and may have missed some). Read the log
    /// after the last seq handled.
    Elsewhere { upto: Option<u64> },
}

/// A user's channel and how many subscriptions hold it.
#[derive(Debug)]
struct Slot {
    sender: broadcast::Sender<Live>,
    /// Counted here rather than read from `receiver_count`, so the slot
    /// goes exactly when the last [`Subscription`] drops, with the lock
    /// held (no race with a concurrent subscribe).
    subscriptions: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Hub {
    users: Arc<Mutex<HashMap<String, Slot>>>,
}

impl Hub {
    pub fn subscribe(&self, user_id: &str) -> Subscription {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = users.entry(user_id.to_owned()).or_insert_with(|| Slot {
            sender: broadcast::channel(BUFFER).0,
            subscriptions: 0,
        });
        slot.subscriptions += 1;
        Subscription {
            receiver: slot.sender.subscribe(),
            hub: self.clone(),
            user_id: user_id.to_owned(),
        }
    }

    /// Sends `change` to the user's subscribers, if any.
    pub fn publish(&self, user_id: &str, change: &Change) {
        let users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = users.get(user_id) {
            // Cannot fail: a slot exists only while a subscription (and so
            // its receiver) lives.
            let _ = slot.sender.send(Live::Change(Box::new(change.clone())));
        }
    }

    /// Tells the user's subscribers, if any, that the log holds changes up
    /// to `upto` that another process committed.
    pub fn elsewhere(&self, user_id: &str, upto: u64) {
        let users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = users.get(user_id) {
            let _ = slot.sender.send(Live::Elsewhere { upto: Some(upto) });
        }
    }

    /// Tells every subscriber to read the log: changes may have been
    /// committed elsewhere without a notice reaching this process.
    pub fn resync_all(&self) {
        let users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        for slot in users.values() {
            let _ = slot.sender.send(Live::Elsewhere { upto: None });
        }
    }

    /// Users whose channel is held, i.e. with at least one live
    /// subscription (for metrics and tests).
    pub fn users(&self) -> usize {
        self.users
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn release(&self, user_id: &str) {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(slot) = users.get_mut(user_id) else {
            debug_assert!(false, "a subscription outlived its slot");
            return;
        };
        slot.subscriptions -= 1;
        if slot.subscriptions == 0 {
            users.remove(user_id);
        }
    }
}

/// One subscriber's view of a user's live changes; dropping it releases the
/// user's channel when it was the last.
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<Live>,
    hub: Hub,
    user_id: String,
}

impl Subscription {
    /// The next change or notice (cancel-safe, as
    /// `broadcast::Receiver::recv`).
    pub async fn recv(&mut self) -> Result<Live, broadcast::error::RecvError> {
        self.receiver.recv().await
    }

    /// The next change or notice if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Result<Live, broadcast::error::TryRecvError> {
        self.receiver.try_recv()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.release(&self.user_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_subscription_frees_the_users_channel() {
        let hub = Hub::default();
        let first = hub.subscribe("u1");
        let second = hub.subscribe("u1");
        let other = hub.subscribe("u2");
        assert_eq!(hub.users(), 2);
        drop(first);
        assert_eq!(hub.users(), 2, "u1 still has a subscriber");
        drop(second);
        assert_eq!(hub.users(), 1);
        drop(other);
        assert_eq!(hub.users(), 0);
        // A later subscribe starts a fresh channel.
        let _again = hub.subscribe("u1");
        assert_eq!(hub.users(), 1);
    }

    #[test]
    fn notices_reach_only_subscribed_users_and_resync_reaches_all() {
        let hub = Hub::default();
        let mut u1 = hub.subscribe("u1");
        let mut u2 = hub.subscribe("u2");
        hub.elsewhere("u1", 7);
        hub.elsewhere("nobody", 3);
        assert_eq!(u1.try_recv().unwrap(), Live::Elsewhere { upto: Some(7) });
        assert!(u2.try_recv().is_err(), "u2 hears nothing of u1");
        hub.resync_all();
        for live in [&mut u1, &mut u2] {
            assert_eq!(live.try_recv().unwrap(), Live::Elsewhere { upto: None });
        }
        assert_eq!(hub.users(), 2, "a notice for nobody holds no channel");
    }
}
