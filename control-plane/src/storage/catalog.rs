//! The catalog's API-defined notification types and rules in SQL: table
//! `catalog_definitions` (migration 0007), one row per definition, keyed by
//! kind (`type` or `rule`) and name, the definition as JSON.
//!
//! # Promises
//!
//! * Every write is one statement that has committed (durably) when it
//!   returns: a definition the management API accepted comes back at the
//!   next start, one it deleted does not.
//! * [`CatalogTable::put_type`] and [`CatalogTable::put_rule`] replace
//!   whatever was stored under the same kind and name; a type and a rule
//!   of one name are separate rows.
//! * Nothing here validates a definition: [`crate::catalog`] checks it
//!   against the config file before it writes, and writes nothing for a
//!   definition it refuses.
//! * A stored row that no longer decodes (or a rule row whose JSON names
//!   another rule) fails [`CatalogTable::load`] with
//!   [`StorageError::Corrupt`] naming the row, never silently drops it.

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::StorageError;
use super::database::{Database, with_pool};
use crate::catalog::TypeDefinition;
use crate::rules::Rule;

/// What a catalog row defines: the `kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CatalogKind {
    Type,
    Rule,
}

impl CatalogKind {
    /// The `kind` column's value.
    pub fn as_str(self) -> &'static str {
        match self {
            CatalogKind::Type => "type",
            CatalogKind::Rule => "rule",
        }
    }
}

/// Every stored definition, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredCatalog {
    pub types: BTreeMap<String, TypeDefinition>,
    pub rules: BTreeMap<String, Rule>,
}

/// The `catalog_definitions` table. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CatalogTable {
    database: Database,
}

impl CatalogTable {
    pub(super) fn new(database: Database) -> Self {
        CatalogTable { database }
    }

    /// Every stored type and rule.
    pub async fn load(&self) -> Result<StoredCatalog, StorageError> {
        let _timer = self.database.metrics().time("catalog_load");
        let rows: Vec<(String, String, String)> = with_pool!(self.database, pool => {
            sqlx::query_as("SELECT kind, name, definition FROM catalog_definitions")
                .fetch_all(pool)
                .await?
        });
        let mut stored = StoredCatalog::default();
        for (kind, name, definition) in rows {
            let corrupt = |detail: String| {
                StorageError::Corrupt(format!("catalog {kind} {name:?}: {detail}"))
            };
            match kind.as_str() {
                "type" => {
                    let definition = serde_json::from_str(&definition)
                        .map_err(|error| corrupt(error.to_string()))?;
                    stored.types.insert(name, definition);
                }
                "rule" => {
                    let rule: Rule = serde_json::from_str(&definition)
                        .map_err(|error| corrupt(error.to_string()))?;
                    if rule.name != name {
                        return Err(corrupt(format!("holds rule {:?}", rule.name)));
                    }
                    stored.rules.insert(name, rule);
                }
                _ => return Err(corrupt("not a type or a rule".to_owned())),
            }
        }
        Ok(stored)
    }

    /// Stores the type `name`, replacing a stored one.
    pub async fn put_type(
        &self,
        name: &str,
        definition: &TypeDefinition,
    ) -> Result<(), StorageError> {
        self.put(CatalogKind::Type, name, serde_json::to_string(definition)?)
            .await
    }

    /// Stores `rule` under its name, replacing a stored one.
    pub async fn put_rule(&self, rule: &Rule) -> Result<(), StorageError> {
        self.put(CatalogKind::Rule, &rule.name, serde_json::to_string(rule)?)
            .await
    }

    async fn put(
        &self,
        kind: CatalogKind,
        name: &str,
        definition: String,
    ) -> Result<(), StorageError> {
        let _timer = self.database.metrics().time("catalog_put");
        with_pool!(write self.database, pool => {
            sqlx::query(
                "INSERT INTO catalog_definitions (kind, name, definition, updated_at) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (kind, name) DO UPDATE SET definition = excluded.definition, \
                 updated_at = excluded.updated_at",
            )
            .bind(kind.as_str())
            .bind(name)
            .bind(definition)
            .bind(Timestamp::now().as_millisecond())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Deletes the definition of `kind` named `name`; `true` when there
    /// was one.
    pub async fn delete(&self, kind: CatalogKind, name: &str) -> Result<bool, StorageError> {
        let _timer = self.database.metrics().time("catalog_delete");
        let removed = with_pool!(write self.database, pool => {
            sqlx::query("DELETE FROM catalog_definitions WHERE kind = $1 AND name = $2")
                .bind(kind.as_str())
                .bind(name)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(removed > 0)
    }

    /// Stores `definition` as the text of a row as is: for tests of what
    /// a damaged row does.
    #[cfg(test)]
    pub(crate) async fn put_raw(
        &self,
        kind: CatalogKind,
        name: &str,
        definition: &str,
    ) -> Result<(), StorageError> {
        self.put(kind, name, definition.to_owned()).await
    }
}
