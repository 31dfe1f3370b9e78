//! Wakeups across processes: PostgreSQL `LISTEN`/`NOTIFY`.
//!
//! Readers of a table that other processes write (the engine tailing the
//! event feed, the live stream reading the inbox's change log) wait on an
//! in-process signal that this process's writers raise after each commit.
//! On PostgreSQL, where several control planes share the database, a
//! writer also sends a `NOTIFY` in its transaction, and a listener task in
//! every process turns what it receives into the same in-process signal:
//! [`listen`] for a bare wakeup, [`listen_to`] when the payload says which
//! part of the table to look at (a user id, …).
//!
//! # Promises
//!
//! * **A commit wakes every process, a rollback none.** PostgreSQL
//!   delivers a notification when its transaction commits (identical ones
//!   of one transaction folded into one), never before, so a woken reader
//!   finds the rows.
//! * **A wakeup says "look", the database says what.** Payloads are empty
//!   or at most say *where* to look (never the data): the reader re-reads
//!   the table from its own cursor, so a wakeup that is late, doubled or
//!   spurious costs one query and loses nothing.
//! * **A lost connection is not a lost change.** Notifications sent while
//!   the listener was disconnected are gone, so it wakes once after every
//!   (re)connect ([`Heard::Connected`]: "anything may have changed"), and
//!   readers catch up from the table. The engine's feed readers keep a
//!   slow fallback timer of their own as well; a live stream waits for the
//!   reconnect (its changes arrive late, never lost).
//! * **Its own connection.** The listener holds one connection outside the
//!   pool (its own one-connection pool, for reconnects), so the configured
//!   pool size is what queries get.
//! * **Gone with its owner.** The task ends when the [`Listening`] guard is
//!   dropped.
//! * On SQLite there is nothing to listen to: one process owns the file
//!   (it is locked), and its in-process signals reach every reader.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::sync::oneshot;

use super::database::Database;

/// The channel ingest notifies after a commit that stored events.
pub(super) const EVENTS_CHANNEL: &str = "nudge_events";
/// The channel inbox writers notify after a commit that logged changes
/// (payload: which users, see `storage::inbox`).
pub(super) const INBOX_CHANNEL: &str = "nudge_inbox";

/// How long one attempt to (re)connect the listener may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Waits between failed attempts: doubling from the first to the last.
const FIRST_RETRY: Duration = Duration::from_millis(250);
const LAST_RETRY: Duration = Duration::from_secs(10);

/// What a listener passes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Heard<'a> {
    /// One notification, with its payload.
    Notified(&'a str),
    /// The listener (re)connected: whatever was sent before is unheard.
    Connected,
}

/// Keeps a listener task running; dropping it stops the task.
#[derive(Debug)]
pub struct Listening {
    _stop: oneshot::Sender<()>,
}

/// Calls `wake` for every notification on `channel` and after every
/// (re)connect, until the returned guard is dropped. `None` on SQLite.
/// Call inside a tokio runtime.
pub(super) fn listen(
    database: &Database,
    channel: &'static str,
    wake: impl Fn() + Send + 'static,
) -> Option<Listening> {
    listen_to(database, channel, move |_| wake())
}

/// Calls `heard` with every notification on `channel` (and its payload)
/// and after every (re)connect, until the returned guard is dropped.
/// `None` on SQLite. Call inside a tokio runtime.
pub(super) fn listen_to(
    database: &Database,
    channel: &'static str,
    heard: impl Fn(Heard<'_>) + Send + 'static,
) -> Option<Listening> {
    let options = database
        .listen_options()?
        .clone()
        .application_name("nudge-control-plane listener");
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(async move {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(CONNECT_TIMEOUT)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(options);
        tokio::select! {
            () = receive(&pool, channel, heard) => {}
            _ = stopped => {}
        }
        pool.close().await;
    });
    Some(Listening { _stop: stop })
}

/// The listener's loop; runs until the task is stopped.
async fn receive(pool: &PgPool, channel: &'static str, heard: impl Fn(Heard<'_>)) {
    let mut retry = FIRST_RETRY;
    loop {
        let mut listener = match subscribe(pool, channel).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, channel, retry_in = ?retry, "cannot listen for wakeups; readers fall back to their timers");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(LAST_RETRY);
                continue;
            }
        };
        retry = FIRST_RETRY;
        // Anything sent before this connection listened is unheard.
        heard(Heard::Connected);
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => heard(Heard::Notified(notification.payload())),
                // The connection was lost and has been re-established (it
                // listens again): what was sent in between is gone.
                Ok(None) => {
                    tracing::info!(channel, "wakeup listener reconnected");
                    heard(Heard::Connected);
                }
                Err(error) => {
                    tracing::warn!(%error, channel, "wakeup listener lost its connection");
                    break;
                }
            }
        }
    }
}

async fn subscribe(pool: &PgPool, channel: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}
