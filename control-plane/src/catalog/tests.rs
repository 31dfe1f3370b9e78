use std::collections::BTreeSet;

use super::*;
use crate::event::Priority;
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

fn db() -> (tempfile::TempDir, sled::Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    (dir, db)
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

#[test]
fn settings_compose_the_file_and_the_api() {
    let (_dir, db) = db();
    let catalog = Catalog::open(&db, &config(FILE)).unwrap();
    let settings = catalog.settings();
    assert!(settings.current().defaults.types.contains_key("from_file"));
    assert_eq!(settings.current().rules.len(), 1);

    let (entry, created) = catalog.put_type("welcome", in_app_type("Hi")).unwrap();
    assert!(created);
    assert_eq!((entry.source, entry.problem), (Source::Api, None));
    catalog.put_rule(rule("api-rule", "welcome")).unwrap();
    let now = settings.current();
    assert!(now.defaults.types.contains_key("welcome"));
    assert!(now.templates.get("welcome", ChannelKind::InApp).is_some());
    let names: Vec<_> = now.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["file-rule", "api-rule"]);

    let (_, created) = catalog.put_type("welcome", in_app_type("Hello")).unwrap();
    assert!(!created, "a replacement");
    catalog.delete_type("welcome").unwrap();
    assert!(!settings.current().defaults.types.contains_key("welcome"));
    assert!(matches!(
        catalog.delete_type("welcome"),
        Err(CatalogError::NotFound { .. })
    ));
}

#[test]
fn the_file_is_read_only() {
    let (_dir, db) = db();
    let catalog = Catalog::open(&db, &config(FILE)).unwrap();
    let refused = catalog.put_type("from_file", in_app_type("x")).unwrap_err();
    assert!(
        refused.to_string().contains("defined in the config file"),
        "{refused}"
    );
    assert!(matches!(
        catalog.delete_type("from_file"),
        Err(CatalogError::FileDefined { kind: "type", .. })
    ));
    assert!(matches!(
        catalog.put_rule(rule("file-rule", "x")),
        Err(CatalogError::FileDefined { kind: "rule", .. })
    ));
    assert!(matches!(
        catalog.delete_rule("file-rule"),
        Err(CatalogError::FileDefined { .. })
    ));
    assert_eq!(catalog.get_type("from_file").unwrap().source, Source::File);
}

#[test]
fn invalid_definitions_change_nothing() {
    let (_dir, db) = db();
    let catalog = Catalog::open(&db, &config(FILE)).unwrap();
    let before = catalog.settings().current();

    let error = catalog
        .put_type("broken", in_app_type("{{ oops"))
        .unwrap_err();
    let CatalogError::InvalidType { error, .. } = &error else {
        panic!("{error}")
    };
    assert_eq!(error.field, "templates");
    let email = TypeDefinition {
        channels: BTreeSet::from([ChannelKind::Email]),
        ..TypeDefinition::default()
    };
    assert!(catalog.put_type("mail", email).is_err(), "email is off");
    let mut unless = rule("bad", "t");
    unless.unless = Some("Bought".to_owned());
    assert!(matches!(
        catalog.put_rule(unless),
        Err(CatalogError::InvalidRule(_))
    ));

    assert!(catalog.get_type("broken").is_none());
    assert!(catalog.get_rule("bad").is_none());
    assert!(Arc::ptr_eq(&before, &catalog.settings().current()));
    assert_eq!(db.open_tree(TREE).unwrap().len(), 0);
}

#[test]
fn api_definitions_survive_a_reopen() {
    let (dir, db) = db();
    {
        let catalog = Catalog::open(&db, &config(FILE)).unwrap();
        catalog.put_type("welcome", in_app_type("Hi")).unwrap();
        catalog.put_rule(rule("api-rule", "welcome")).unwrap();
    }
    drop(db);
    let db = sled::open(dir.path()).unwrap();
    let catalog = Catalog::open(&db, &config(FILE)).unwrap();
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

#[test]
fn stored_definitions_the_file_now_shadows_or_invalidates_are_listed_out_of_force() {
    let (dir, db) = db();
    {
        let email_on = config(
            "[channels.email]\nhost = \"smtp.example.com\"\ntls = \"none\"\nfrom = \"n@example.com\"\n",
        );
        let catalog = Catalog::open(&db, &email_on).unwrap();
        let email = TypeDefinition {
            channels: BTreeSet::from([ChannelKind::Email]),
            ..TypeDefinition::default()
        };
        catalog.put_type("mail", email).unwrap();
        catalog.put_type("from_file", in_app_type("mine")).unwrap();
        catalog.put_rule(rule("file-rule", "mail")).unwrap();
    }
    drop(db);
    let db = sled::open(dir.path()).unwrap();
    // The file no longer configures email, and now defines `from_file`
    // and `file-rule` itself.
    let catalog = Catalog::open(&db, &config(FILE)).unwrap();
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
    catalog.delete_type("mail").unwrap();
}
