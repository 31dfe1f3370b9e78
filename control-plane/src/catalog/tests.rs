use std::collections::BTreeSet;
use std::path::Path;

use super::*;
use crate::event::Priority;
use crate::storage::Stores;
use crate::templates::Template;

const FILE: &str = r#"
[types.from_file]
channels = ["in_app"]

[[rules]]
name = "file-rule"
on = "Signed Up"
notify = "from_file"
"#;

fn config(text: &str) -> EngineConfig {
    EngineConfig::from_toml(text, "nudge.toml").unwrap()
}

async fn stores() -> (tempfile::TempDir, Stores) {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open_embedded(dir.path()).await.unwrap();
    (dir, stores)
}

/// What a restart does: close the stores (which releases the database
/// file), then open them again on the same data dir. The caller has
/// dropped every catalog over `stores`.
async fn reopen(dir: &Path, stores: Stores) -> Stores {
    stores.close().await.unwrap();
    drop(stores);
    Stores::open_embedded(dir).await.unwrap()
}

fn in_app_type(title: &str) -> TypeDefinition {
    let mut definition = TypeDefinition {
        channels: BTreeSet::from([ChannelKind::InApp]),
        ..TypeDefinition::default()
    };
    definition.templates.channels.insert(
        ChannelKind::InApp,
        Template {
            title: title.to_owned(),
            ..Template::default()
        },
    );
    definition
}

fn rule(name: &str, notify: &str) -> Rule {
    Rule {
        name: name.to_owned(),
        on: "Clicked".to_owned(),
        notify: notify.to_owned(),
        when: Vec::new(),
        delay: None,
        unless: None,
        channels: Vec::new(),
        priority: Priority::Normal,
    }
}

#[tokio::test]
async fn settings_compose_the_file_and_the_api() {
    let (_dir, stores) = stores().await;
    let catalog = Catalog::open(stores.catalog.clone(), &config(FILE))
        .await
        .unwrap();
    let settings = catalog.settings();
    assert!(settings.current().defaults.types.contains_key("from_file"));
    assert_eq!(settings.current().rules.len(), 1);

    let (entry, created) = catalog
        .put_type("welcome", in_app_type("Hi"))
        .await
        .unwrap();
    assert!(created);
    assert_eq!((entry.source, entry.problem), (Source::Api, None));
    catalog.put_rule(rule("api-rule", "welcome")).await.unwrap();
    let now = settings.current();
    assert!(now.defaults.types.contains_key("welcome"));
    assert!(now.templates.get("welcome", ChannelKind::InApp).is_some());
    let names: Vec<_> = now.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["file-rule", "api-rule"]);

    let (_, created) = catalog
        .put_type("welcome", in_app_type("Hello"))
        .await
        .unwrap();
    assert!(!created, "a replacement");
    catalog.delete_type("welcome").await.unwrap();
    assert!(!settings.current().defaults.types.contains_key("welcome"));
    assert!(matches!(
        catalog.delete_type("welcome").await,
        Err(CatalogError::NotFound { .. })
    ));
}

#[tokio::test]
async fn the_file_is_read_only() {
    let (_dir, stores) = stores().await;
    let catalog = Catalog::open(stores.catalog.clone(), &config(FILE))
        .await
        .unwrap();
    let refused = catalog
        .put_type("from_file", in_app_type("x"))
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("defined in the config file"),
        "{refused}"
    );
    assert!(matches!(
        catalog.delete_type("from_file").await,
        Err(CatalogError::FileDefined { kind: "type", .. })
    ));
    assert!(matches!(
        catalog.put_rule(rule("file-rule", "x")).await,
        Err(CatalogError::FileDefined { kind: "rule", .. })
    ));
    assert!(matches!(
        catalog.delete_rule("file-rule").await,
        Err(CatalogError::FileDefined { .. })
    ));
    assert_eq!(catalog.get_type("from_file").unwrap().source, Source::File);
}

#[tokio::test]
async fn invalid_definitions_change_nothing() {
    let (_dir, stores) = stores().await;
    let catalog = Catalog::open(stores.catalog.clone(), &config(FILE))
        .await
        .unwrap();
    let before = catalog.settings().current();

    let error = catalog
        .put_type("broken", in_app_type("{{ oops"))
        .await
        .unwrap_err();
    let CatalogError::InvalidType { error, .. } = &error else {
        panic!("{error}")
    };
    assert_eq!(error.field, "templates");
    let email = TypeDefinition {
        channels: BTreeSet::from([ChannelKind::Email]),
        ..TypeDefinition::default()
    };
    assert!(
        catalog.put_type("mail", email).await.is_err(),
        "email is off"
    );
    let mut unless = rule("bad", "t");
    unless.unless = Some("Bought".to_owned());
    assert!(matches!(
        catalog.put_rule(unless).await,
        Err(CatalogError::InvalidRule(_))
    ));

    assert!(catalog.get_type("broken").is_none());
    assert!(catalog.get_rule("bad").is_none());
    assert!(Arc::ptr_eq(&before, &catalog.settings().current()));
    assert_eq!(
        stores.catalog.load().await.unwrap(),
        StoredCatalog::default()
    );
}

#[tokio::test]
async fn api_definitions_survive_a_reopen() {
    let (dir, stores) = stores().await;
    {
        let catalog = Catalog::open(stores.catalog.clone(), &config(FILE))
            .await
            .unwrap();
        catalog
            .put_type("welcome", in_app_type("Hi"))
            .await
            .unwrap();
        catalog.put_rule(rule("api-rule", "welcome")).await.unwrap();
    }
    let stores = reopen(dir.path(), stores).await;
    let catalog = Catalog::open(stores.catalog.clone(), &config(FILE))
        .await
        .unwrap();
    assert_eq!(catalog.get_type("welcome").unwrap().source, Source::Api);
    assert_eq!(catalog.rules().len(), 2);
    assert!(
        catalog
            .settings()
            .current()
            .templates
            .get("welcome", ChannelKind::InApp)
            .is_some()
    );
}

#[tokio::test]
async fn stored_definitions_the_file_now_shadows_or_invalidates_are_listed_out_of_force() {
    let (dir, stores) = stores().await;
    {
        let email_on = config(
            "[channels.email]\nhost = \"smtp.example.com\"\ntls = \"none\"\nfrom = \"n@example.com\"\n",
        );
        let catalog = Catalog::open(stores.catalog.clone(), &email_on)
            .await
            .unwrap();
        let email = TypeDefinition {
            channels: BTreeSet::from([ChannelKind::Email]),
            ..TypeDefinition::default()
        };
        catalog.put_type("mail", email).await.unwrap();
        catalog
            .put_type("from_file", in_app_type("mine"))
            .await
            .unwrap();
        catalog.put_rule(rule("file-rule", "mail")).await.unwrap();
    }
    let stores = reopen(dir.path(), stores).await;
    // The file no longer configures email, and now defines `from_file`
    // and `file-rule` itself.
    let catalog = Catalog::open(stores.catalog.clone(), &config(FILE))
        .await
        .unwrap();
    let settings = catalog.settings().current();
    assert!(!settings.defaults.types.contains_key("mail"));
    let mail = catalog.get_type("mail").unwrap();
    assert!(
        mail.problem
            .as_deref()
            .unwrap()
            .contains("[channels.email]"),
        "{mail:?}"
    );
    assert_eq!(catalog.get_type("from_file").unwrap().source, Source::File);
    let types = catalog.types();
    let shadowed = types
        .iter()
        .find(|entry| entry.name == "from_file" && entry.source == Source::Api)
        .unwrap();
    assert!(shadowed.problem.is_some());
    assert!(
        settings
            .templates
            .get("from_file", ChannelKind::InApp)
            .is_none()
    );
    assert_eq!(settings.rules.len(), 1, "the file's rule only");
    // Out of force, but still deletable.
    catalog.delete_type("mail").await.unwrap();
}

#[tokio::test]
async fn a_change_whose_caller_goes_away_still_goes_into_force() {
    use futures::FutureExt;

    let (_dir, stores) = stores().await;
    let catalog = Catalog::open(stores.catalog.clone(), &config(FILE))
        .await
        .unwrap();
    // Polled once, then dropped: what tonic does to a handler whose client
    // hangs up while the change waits on the database.
    let put = catalog.put_type("welcome", in_app_type("Hi"));
    assert!(put.now_or_never().is_none(), "the change waits on a commit");
    // The next change takes the lock after the first has ended.
    catalog.put_rule(rule("api-rule", "welcome")).await.unwrap();
    assert_eq!(catalog.get_type("welcome").unwrap().source, Source::Api);
    assert!(
        catalog
            .settings()
            .current()
            .defaults
            .types
            .contains_key("welcome")
    );
    let stored = stores.catalog.load().await.unwrap();
    assert_eq!(stored.types["welcome"], in_app_type("Hi"));
}

#[tokio::test]
async fn an_unreadable_stored_definition_fails_the_start() {
    let (_dir, stores) = stores().await;
    stores
        .catalog
        .put_raw(CatalogKind::Type, "welcome", "{\"channels\": 3}")
        .await
        .unwrap();
    let error = Catalog::open(stores.catalog.clone(), &config(FILE))
        .await
        .err()
        .expect("refused");
    let CatalogError::Corrupt(detail) = &error else {
        panic!("{error}")
    };
    assert!(detail.contains("type \"welcome\""), "{detail}");

    // A rule row whose JSON names another rule is as unreadable.
    stores
        .catalog
        .delete(CatalogKind::Type, "welcome")
        .await
        .unwrap();
    let other = serde_json::to_string(&rule("other", "from_file")).unwrap();
    stores
        .catalog
        .put_raw(CatalogKind::Rule, "mine", &other)
        .await
        .unwrap();
    let error = Catalog::open(stores.catalog.clone(), &config(FILE))
        .await
        .err()
        .expect("refused");
    assert!(
        error.to_string().contains("holds rule \"other\""),
        "{error}"
    );
}
