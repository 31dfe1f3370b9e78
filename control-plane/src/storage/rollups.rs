//! The analytics rollups in SQL: table `analytics_rollups` (migration
//! 0008), an ordered map of byte keys to byte values. What the keys mean
//! is `crate::analytics`'s (its `layout`); this module keeps them ordered
//! and writes a pass atomically.
//!
//! # Promises
//!
//! * **Bytewise order.** Keys are BLOB (SQLite) or bytea (PostgreSQL),
//!   both compared as unsigned bytes, so [`RollupTable::range`] returns
//!   the same rows in the same order on either engine, keys with bytes
//!   of 0x80 and above included.
//! * **A commit is all or nothing**: every put and removal of
//!   [`RollupTable::commit`] is one transaction (`BEGIN IMMEDIATE` on
//!   SQLite), so a crash leaves the table as before the call or as after
//!   it.
//! * **Commits do not overlap.** Each commit moves the table's generation
//!   on, and applies only if the generation is still the one its caller
//!   read before reading anything else ([`RollupTable::generation`]):
//!   a pass computed from a state another writer has changed since (a
//!   second worker, a replica) is refused, not applied over that change.
//! * Reads are batched: [`RollupTable::get`] takes any number of keys and
//!   reads them in `IN (…)` lists of [`CHUNK`].

use super::StorageError;
use super::database::{Database, begin_write, with_pool};
use super::deliveries::delete_facts_in;
use super::deliveries::placeholders;
use super::sql_text::{dynamic, numbered};

/// Keys per `IN (…)` list and rows per multi-row statement: far below
/// either engine's limit on parameters (SQLite 32,766; PostgreSQL 65,535).
const CHUNK: usize = 500;

/// The row holding the commit generation (8 bytes, big-endian), seeded
/// at 0 by the migration. No rollup key equals it: theirs all hold a
/// 0x00 after the family.
const GENERATION: &[u8] = b"generation";

/// A key and its value.
pub type RollupRow = (Vec<u8>, Vec<u8>);

/// The `analytics_rollups` table. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RollupTable {
    database: Database,
}

impl RollupTable {
    pub(super) fn new(database: Database) -> Self {
        RollupTable { database }
    }

    /// The stored rows among `keys`, in no particular order (absent keys
    /// are left out).
    pub async fn get(&self, keys: &[Vec<u8>]) -> Result<Vec<RollupRow>, StorageError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let _timer = self.database.metrics().time("rollups_get");
        let mut rows = Vec::new();
        for chunk in keys.chunks(CHUNK) {
            let sql = format!(
                "SELECT key, value FROM analytics_rollups WHERE key IN ({})",
                numbered(1, chunk.len())
            );
            let found: Vec<RollupRow> = with_pool!(self.database, pool, engine => {
                let mut query = sqlx::query_as(dynamic(engine, sql));
                for key in chunk {
                    query = query.bind(key.as_slice());
                }
                query.fetch_all(pool).await?
            });
            rows.extend(found);
        }
        Ok(rows)
    }

    /// The rows with `start <= key < end` (to the last key without `end`),
    /// in ascending bytewise order of their keys.
    pub async fn range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> Result<Vec<RollupRow>, StorageError> {
        let _timer = self.database.metrics().time("rollups_range");
        let rows: Vec<RollupRow> = with_pool!(self.database, pool => {
            match end {
                Some(end) => sqlx::query_as(
                    "SELECT key, value FROM analytics_rollups \
                     WHERE key >= $1 AND key < $2 ORDER BY key",
                )
                .bind(start)
                .bind(end)
                .fetch_all(pool)
                .await?,
                None => sqlx::query_as(
                    "SELECT key, value FROM analytics_rollups WHERE key >= $1 ORDER BY key",
                )
                .bind(start)
                .fetch_all(pool)
                .await?,
            }
        });
        Ok(rows)
    }

    /// The rows whose keys start with `prefix`, in key order.
    pub async fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<RollupRow>, StorageError> {
        self.range(prefix, prefix_end(prefix).as_deref()).await
    }

    /// The generation a later [`RollupTable::commit`] must find to apply:
    /// read it before anything the commit's writes are computed from.
    pub async fn generation(&self) -> Result<u64, StorageError> {
        let rows = self.get(&[GENERATION.to_vec()]).await?;
        match rows.first() {
            Some((_, value)) => decode_generation(value),
            None => Err(StorageError::Corrupt(
                "analytics_rollups has no generation row".to_owned(),
            )),
        }
    }

    /// Writes `writes` (a value to put, `None` to remove the key) and
    /// removes the delivery facts numbered `counted_facts` (what these
    /// writes counted) in one transaction, if the generation is still
    /// `generation`, moving it on; returns `false`, writing nothing, if
    /// another commit came first. A key written twice takes its last value.
    pub async fn commit(
        &self,
        generation: u64,
        writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        counted_facts: &[i64],
    ) -> Result<bool, StorageError> {
        // Last write wins, and rows go in key order: PostgreSQL refuses an
        // upsert that names a key twice, and a fixed order keeps two
        // writers from locking each other's rows crosswise.
        let writes: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> =
            writes.into_iter().collect();
        let (puts, removals): (Vec<_>, Vec<_>) =
            writes.into_iter().partition(|(_, value)| value.is_some());
        let expected = generation.to_be_bytes().to_vec();
        let next = generation.wrapping_add(1).to_be_bytes().to_vec();
        let metrics = self.database.metrics();
        let _timer = metrics.time("rollups_commit");
        let applied = with_pool!(write self.database, pool, engine => {
            let mut tx = begin_write(metrics, pool, engine).await?;
            // The check and the move in one statement: on PostgreSQL a
            // second writer waits for the row and then finds it changed.
            let moved = sqlx::query(
                "UPDATE analytics_rollups SET value = $1 WHERE key = $2 AND value = $3",
            )
            .bind(next.as_slice())
            .bind(GENERATION)
            .bind(expected.as_slice())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if moved != 1 {
                tx.rollback().await?;
                false
            } else {
                for chunk in puts.chunks(CHUNK) {
                    let sql = format!(
                        "INSERT INTO analytics_rollups (key, value) VALUES {} \
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        placeholders(chunk.len(), 2)
                    );
                    let mut query = sqlx::query(dynamic(engine, sql));
                    for (key, value) in chunk {
                        query = query.bind(key.as_slice()).bind(value.as_deref().unwrap_or_default());
                    }
                    query.execute(&mut *tx).await?;
                }
                for chunk in removals.chunks(CHUNK) {
                    let sql = format!(
                        "DELETE FROM analytics_rollups WHERE key IN ({})",
                        numbered(1, chunk.len())
                    );
                    let mut query = sqlx::query(dynamic(engine, sql));
                    for (key, _) in chunk {
                        query = query.bind(key.as_slice());
                    }
                    query.execute(&mut *tx).await?;
                }
                delete_facts_in!(tx, engine, counted_facts);
                tx.commit().await?;
                true
            }
        });
        Ok(applied)
    }
}

/// The first key after every key that starts with `prefix` (`None`: no
/// such key, the prefix is all 0xff).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn decode_generation(value: &[u8]) -> Result<u64, StorageError> {
    let bytes: [u8; 8] = value.try_into().map_err(|_| {
        StorageError::Corrupt(format!(
            "analytics_rollups generation is {} bytes",
            value.len()
        ))
    })?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_ends_at_its_successor() {
        assert_eq!(prefix_end(b"a\0"), Some(b"a\x01".to_vec()));
        assert_eq!(prefix_end(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
