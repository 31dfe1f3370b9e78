//! The conformance suite of the catalog's table: every case runs on SQLite
//! and on PostgreSQL (`support::Backend`) against the promises of
//! `control-plane/src/storage/catalog.rs` and the catalog's module doc:
//! definitions survive a restart, a put replaces, a delete stays deleted,
//! a change the catalog refuses writes nothing, and a type and a rule of
//! one name are separate rows.

#[macro_use]
mod support;

use std::path::Path;

use nudge_control_plane::catalog::{Catalog, CatalogError, TypeDefinition};
use nudge_control_plane::engine_config::EngineConfig;
use nudge_control_plane::rules::Rule;
use nudge_control_plane::storage::{
    CatalogKind, DatabaseSettings, StorageMetrics, StoredCatalog, Stores,
};
use support::Backend;

/// A fresh database of `backend`, with the settings to open it again.
async fn fresh(backend: Backend, dir: &Path) -> (DatabaseSettings, Stores) {
    let settings = support::fresh_settings(backend, dir).await;
    let stores = open(&settings, dir).await;
    (settings, stores)
}

async fn open(settings: &DatabaseSettings, dir: &Path) -> Stores {
    Stores::open(settings, dir, StorageMetrics::new())
        .await
        .expect("open the stores")
}

/// A restart: the stores closed, then opened again on the same database.
async fn reopen(settings: &DatabaseSettings, dir: &Path, stores: Stores) -> Stores {
    stores.close().await.unwrap();
    drop(stores);
    open(settings, dir).await
}

/// An in-app type whose title is `title`.
fn in_app_type(title: &str) -> TypeDefinition {
    serde_json::from_value(serde_json::json!({
        "channels": ["in_app"],
        "category": "onboarding",
        "templates": { "channels": { "in_app": { "title": title } } },
    }))
    .unwrap()
}

/// A delayed rule, so that its duration's round trip is checked too.
fn rule(name: &str, notify: &str) -> Rule {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "on": "cart_add",
        "notify": notify,
        "delay": "1h",
        "unless": "purchase",
        "when": [{ "property": "total", "op": "gte", "value": 20 }],
    }))
    .unwrap()
}

async fn definitions_come_back_after_a_reopen(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (settings, stores) = fresh(backend, dir.path()).await;
    assert_eq!(
        stores.catalog.load().await.unwrap(),
        StoredCatalog::default()
    );
    stores
        .catalog
        .put_type("welcome", &in_app_type("Hi"))
        .await
        .unwrap();
    stores
        .catalog
        .put_rule(&rule("cart-reminder", "welcome"))
        .await
        .unwrap();

    let stores = reopen(&settings, dir.path(), stores).await;
    let stored = stores.catalog.load().await.unwrap();
    assert_eq!(
        stored.types.into_iter().collect::<Vec<_>>(),
        [("welcome".to_owned(), in_app_type("Hi"))]
    );
    assert_eq!(
        stored.rules.into_iter().collect::<Vec<_>>(),
        [("cart-reminder".to_owned(), rule("cart-reminder", "welcome"))]
    );
}

async fn a_put_replaces_what_was_stored(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (_settings, stores) = fresh(backend, dir.path()).await;
    let table = &stores.catalog;
    table.put_type("welcome", &in_app_type("Hi")).await.unwrap();
    table
        .put_type("welcome", &in_app_type("Hello"))
        .await
        .unwrap();
    table.put_rule(&rule("cart", "welcome")).await.unwrap();
    table.put_rule(&rule("cart", "reminder")).await.unwrap();

    let stored = table.load().await.unwrap();
    assert_eq!(stored.types.len(), 1, "one row per name");
    assert_eq!(stored.types["welcome"], in_app_type("Hello"));
    assert_eq!(stored.rules.len(), 1, "one row per name");
    assert_eq!(stored.rules["cart"].notify, "reminder");
}

async fn a_deleted_definition_stays_gone_after_a_reopen(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (settings, stores) = fresh(backend, dir.path()).await;
    let table = &stores.catalog;
    table.put_type("welcome", &in_app_type("Hi")).await.unwrap();
    table.put_type("kept", &in_app_type("Kept")).await.unwrap();
    table.put_rule(&rule("cart", "welcome")).await.unwrap();

    assert!(table.delete(CatalogKind::Type, "welcome").await.unwrap());
    assert!(table.delete(CatalogKind::Rule, "cart").await.unwrap());
    assert!(
        !table.delete(CatalogKind::Type, "welcome").await.unwrap(),
        "nothing left to delete"
    );
    assert!(!table.delete(CatalogKind::Rule, "never").await.unwrap());
    let stored = table.load().await.unwrap();
    assert_eq!(stored.types.keys().collect::<Vec<_>>(), ["kept"]);
    assert!(stored.rules.is_empty());

    let stores = reopen(&settings, dir.path(), stores).await;
    let stored = stores.catalog.load().await.unwrap();
    assert_eq!(stored.types.keys().collect::<Vec<_>>(), ["kept"]);
    assert!(stored.rules.is_empty());
}

async fn a_refused_change_leaves_the_table_as_it_was(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (settings, stores) = fresh(backend, dir.path()).await;
    let file = EngineConfig::from_toml(
        "[types.from_file]\nchannels = [\"in_app\"]\n\n\
         [[rules]]\nname = \"file-rule\"\non = \"signed_up\"\nnotify = \"from_file\"\n",
        "nudge.toml",
    )
    .unwrap();
    let catalog = Catalog::open(stores.catalog.clone(), &file).await.unwrap();
    catalog
        .put_type("welcome", in_app_type("Hi"))
        .await
        .unwrap();
    catalog.put_rule(rule("cart", "welcome")).await.unwrap();
    let before = stores.catalog.load().await.unwrap();
    assert_eq!(before.types.len(), 1);
    assert_eq!(before.rules.len(), 1);

    // A template that does not compile, as a new type and as the
    // replacement of a stored one.
    for name in ["broken", "welcome"] {
        let refused = catalog.put_type(name, in_app_type("{{ oops")).await;
        assert!(
            matches!(refused, Err(CatalogError::InvalidType { .. })),
            "{name}"
        );
    }
    // A channel the file does not configure.
    let email: TypeDefinition =
        serde_json::from_value(serde_json::json!({ "channels": ["email"] })).unwrap();
    assert!(catalog.put_type("mail", email).await.is_err());
    // `unless` without `delay`, replacing the stored rule.
    let mut invalid = rule("cart", "welcome");
    invalid.delay = None;
    assert!(matches!(
        catalog.put_rule(invalid).await,
        Err(CatalogError::InvalidRule(_))
    ));
    // The file's names, and names nothing defines.
    assert!(matches!(
        catalog.put_type("from_file", in_app_type("x")).await,
        Err(CatalogError::FileDefined { .. })
    ));
    assert!(matches!(
        catalog.delete_rule("file-rule").await,
        Err(CatalogError::FileDefined { .. })
    ));
    assert!(matches!(
        catalog.delete_type("nothing").await,
        Err(CatalogError::NotFound { .. })
    ));

    assert_eq!(stores.catalog.load().await.unwrap(), before);
    drop(catalog);
    let stores = reopen(&settings, dir.path(), stores).await;
    assert_eq!(stores.catalog.load().await.unwrap(), before);
}

async fn a_type_and_a_rule_of_one_name_are_separate(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (settings, stores) = fresh(backend, dir.path()).await;
    let table = &stores.catalog;
    table.put_type("welcome", &in_app_type("Hi")).await.unwrap();
    table.put_rule(&rule("welcome", "welcome")).await.unwrap();
    let stored = table.load().await.unwrap();
    assert_eq!(stored.types["welcome"], in_app_type("Hi"));
    assert_eq!(stored.rules["welcome"], rule("welcome", "welcome"));

    // Deleting one kind leaves the other.
    assert!(table.delete(CatalogKind::Type, "welcome").await.unwrap());
    let stores = reopen(&settings, dir.path(), stores).await;
    let stored = stores.catalog.load().await.unwrap();
    assert!(stored.types.is_empty());
    assert_eq!(stored.rules["welcome"], rule("welcome", "welcome"));
}

on_both_engines!(
    definitions_come_back_after_a_reopen,
    a_put_replaces_what_was_stored,
    a_deleted_definition_stays_gone_after_a_reopen,
    a_refused_change_leaves_the_table_as_it_was,
    a_type_and_a_rule_of_one_name_are_separate,
);
