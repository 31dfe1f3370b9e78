//! Parked events: the dead letters of the engine's event feed.
//!
//! When planning an event fails for a reason that retrying cannot fix (its
//! content is refused, a record it needs is corrupt), the engine parks it
//! here with the reason and moves its cursor on, so one bad event never
//! holds up everyone else's notifications. Operators list parked events
//! (`GET /v1/admin/parked-events`); the event itself stays in the event
//! store until retention prunes it.
//!
//! # Promises
//!
//! * **Durable before the cursor moves**: [`EventStore::park`] returns
//!   after the row is committed; the engine advances its cursor only after.
//! * **Once per event**: parking the same feed sequence again (a replayed
//!   page) keeps the first row and reports `false`, so counts do not double.
//! * **Any content can be parked**: text is stored with NUL bytes replaced
//!   (PostgreSQL's `TEXT` cannot hold them, and a NUL in a name is a
//!   typical reason to park).

use jiff::Timestamp;
use serde::Serialize;

use super::database::with_pool;
use super::{EventStore, StorageError};
use crate::event::Cursor;

/// One parked event, as operators list it (`GET /v1/admin/parked-events`;
/// the field docs are the API's descriptions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(description = "One event the engine set aside instead of processing it.")]
pub struct ParkedEvent {
    // The engine's cursor after it.
    /// The event's position in the feed.
    pub seq: u64,
    pub event_id: String,
    #[schema(required = true)]
    pub user_id: Option<String>,
    // Its schema (`kind_schema`) says which classes there are.
    #[schema(schema_with = kind_schema)]
    pub kind: String,
    /// What failed, in words (NUL bytes shown as U+FFFD).
    pub reason: String,
    pub parked_at: Timestamp,
}

/// A page of parked events, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = ParkedEventPage)]
pub struct ParkedPage {
    pub parked: Vec<ParkedEvent>,
    /// Pass as `after` for the next page; null on the last.
    #[schema(required = true)]
    pub next: Option<u64>,
}

/// `ParkedEvent.kind`'s schema: the classes the engine parks with.
fn kind_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["invalid", "corrupt"]))
        .description(Some(
            "The reason's class (the metric's `reason` label): `invalid` content a store \
             refuses, `corrupt` a record that cannot be read or written.",
        ))
        .build()
}

/// PostgreSQL `TEXT` refuses NUL; what is parked is often there because
/// of one.
fn storable(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

impl EventStore {
    /// Parks the event at feed position `seq`; `false` when it was parked
    /// already.
    pub async fn park(&self, seq: Cursor, parked: &ParkedEvent) -> Result<bool, StorageError> {
        let seq = i64::try_from(seq.0).map_err(|_| {
            StorageError::Corrupt(format!("feed sequence {} is out of range", seq.0))
        })?;
        let (event_id, user_id, kind, reason) = (
            storable(&parked.event_id),
            parked.user_id.as_deref().map(storable),
            storable(&parked.kind),
            storable(&parked.reason),
        );
        let inserted = with_pool!(write self.database(), pool => {
            sqlx::query(
                "INSERT INTO parked_events (seq, event_id, user_id, kind, reason, parked_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (seq) DO NOTHING",
            )
            .bind(seq)
            .bind(event_id)
            .bind(user_id)
            .bind(kind)
            .bind(reason)
            .bind(parked.parked_at.as_millisecond())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(inserted == 1)
    }

    /// Parked events after feed position `after`, oldest first, at most
    /// `limit`.
    pub async fn parked(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<ParkedPage, StorageError> {
        let start = after.map_or(0, |seq| i64::try_from(seq).unwrap_or(i64::MAX));
        let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        type Row = (i64, String, Option<String>, String, String, i64);
        let rows: Vec<Row> = with_pool!(self.database(), pool => {
            sqlx::query_as(
                "SELECT seq, event_id, user_id, kind, reason, parked_at FROM parked_events \
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(start)
            .bind(fetch)
            .fetch_all(pool)
            .await?
        });
        let more = rows.len() > limit;
        let parked = rows
            .into_iter()
            .take(limit)
            .map(|(seq, event_id, user_id, kind, reason, at)| {
                Ok(ParkedEvent {
                    seq: u64::try_from(seq)
                        .map_err(|_| StorageError::Corrupt(format!("parked seq {seq}")))?,
                    event_id,
                    user_id,
                    kind,
                    reason,
                    parked_at: Timestamp::from_millisecond(at)
                        .map_err(|error| StorageError::Corrupt(error.to_string()))?,
                })
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        let next = if more {
            parked.last().map(|event| event.seq)
        } else {
            None
        };
        Ok(ParkedPage { parked, next })
    }
}
