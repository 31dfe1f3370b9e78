//! The catalog: the notification types (defaults, webhook URL, templates)
//! and the rules the engine works with, from two sources — the config file
//! (`NUDGE_CP_CONFIG`) and the management API — composed in one place into
//! the engine's [`EngineSettings`].
//!
//! # Policy
//!
//! * **The file is read-only through the API.** A type or rule whose name
//!   the file defines cannot be put or deleted through the API
//!   ([`CatalogError::FileDefined`]); change the file and restart. Provider
//!   credentials, retry and concurrency live only in the file.
//! * **API definitions are durable.** They are stored as JSON, one row per
//!   definition, in the database's catalog table
//!   ([`crate::storage::CatalogTable`]), committed before a change returns,
//!   and come back at every start.
//! * **Validated like the file's.** A type goes through the same
//!   [`TypeDefinition::check`] as `[types.<name>]` (name alphabet, every
//!   channel configured in the file, webhook URL, templates compile); a rule
//!   through [`Rule::validate`] and then [`validate_rules`] together with
//!   the file's rules (names unique across both).
//! * **A change is all or nothing, and in force at once.** A refused change
//!   leaves storage and settings as they were. An accepted one is stored,
//!   then the whole [`EngineSettings`] is rebuilt and put in the
//!   [`SettingsHandle`], so the engine uses it from its next step. Changes
//!   are serialised by one lock; reads never wait for a change's commit.
//!   A change runs to its end even if its caller goes away, so what is
//!   stored and what is in force never part.
//! * **A stored API definition may fall out of force** when the file
//!   changes under it: the file now defines the same name (the file's
//!   wins), or it no longer validates (its channel's section was removed).
//!   It stays stored, is logged at start, and is listed with its
//!   [`Entry::problem`] until it is replaced or deleted. Start-up never
//!   fails because of one.

mod definition;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};

use crate::channels::ChannelKind;
use crate::engine::{EngineSettings, SettingsHandle};
use crate::engine_config::EngineConfig;
use crate::preferences::OperatorDefaults;
use crate::rules::{Rule, RuleError, validate_rules};
use crate::storage::{CatalogKind, CatalogTable, StorageError, StoredCatalog};
use crate::templates::{TemplateSet, TypeTemplates};

pub use definition::{DefinitionError, TypeDefinition, check_http_url};

/// Where a definition comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    File,
    Api,
}

/// One definition as the catalog lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry<T> {
    pub name: String,
    pub definition: T,
    pub source: Source,
    /// Why a stored API definition is not in force (see the module doc);
    /// always `None` for the file's.
    pub problem: Option<String>,
}

/// Why a catalog change was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("invalid type {name:?}: {error}")]
    InvalidType {
        name: String,
        error: DefinitionError,
    },
    #[error("invalid rule: {0}")]
    InvalidRule(#[from] RuleError),
    #[error(
        "{kind} {name:?} is defined in the config file (NUDGE_CP_CONFIG) and is read-only through the API; change it in the file"
    )]
    FileDefined { kind: &'static str, name: String },
    #[error("no {kind} {name:?} is defined through the API")]
    NotFound { kind: &'static str, name: String },
    /// The database failed; nothing changed, worth retrying.
    #[error("catalog storage: {0}")]
    Storage(StorageError),
    /// A stored definition no longer decodes: retrying will not help.
    #[error("stored catalog definition is unreadable: {0}")]
    Corrupt(String),
}

impl From<StorageError> for CatalogError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::Corrupt(detail) => CatalogError::Corrupt(detail),
            other => CatalogError::Storage(other),
        }
    }
}

/// The file's definitions, fixed for the process's life.
#[derive(Debug)]
struct FileDefinitions {
    types: BTreeMap<String, TypeDefinition>,
    rules: Vec<Rule>,
    /// Channels with a sender: what a type may go out on.
    enabled: BTreeSet<ChannelKind>,
    /// `[[subscriptions]]`: file only.
    subscriptions: Vec<crate::broadcasts::rules::SubscriptionRule>,
}

/// The API's definitions as stored, in force or not.
type ApiDefinitions = StoredCatalog;

/// Why stored API definitions are out of force, by name.
#[derive(Debug, Clone, Default)]
struct Problems {
    types: BTreeMap<String, String>,
    rules: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
struct State {
    api: ApiDefinitions,
    problems: Problems,
}

/// Types and rules from the file and the API. Cheap to clone. Reads are
/// in memory; changes commit to the database before they return.
#[derive(Clone)]
pub struct Catalog {
    inner: Arc<Inner>,
}

struct Inner {
    table: CatalogTable,
    file: FileDefinitions,
    /// Held by a change from reading the state to replacing it, so two
    /// puts cannot both build on the same old state. Async: it is held
    /// across the commit.
    writer: tokio::sync::Mutex<()>,
    /// What reads see; replaced whole after a change has committed.
    state: RwLock<Arc<State>>,
    settings: SettingsHandle,
}

impl Catalog {
    /// The file's definitions of `config` plus the API's stored in
    /// `table`; the engine's settings are composed from both.
    pub async fn open(table: CatalogTable, config: &EngineConfig) -> Result<Self, CatalogError> {
        let file = FileDefinitions {
            types: config.types().clone(),
            rules: config.rules.clone(),
            enabled: config.enabled_channels(),
            subscriptions: config.subscriptions.clone(),
        };
        let api = table.load().await?;
        let (settings, problems) = compose(&file, &api)?;
        for (name, problem) in &problems.types {
            tracing::error!(r#type = %name, %problem, "a type defined through the API is not in force");
        }
        for (name, problem) in &problems.rules {
            tracing::error!(rule = %name, %problem, "a rule defined through the API is not in force");
        }
        Ok(Catalog {
            inner: Arc::new(Inner {
                table,
                file,
                writer: tokio::sync::Mutex::new(()),
                state: RwLock::new(Arc::new(State { api, problems })),
                settings: SettingsHandle::new(settings),
            }),
        })
    }

    /// The engine's settings, kept current by every change.
    pub fn settings(&self) -> SettingsHandle {
        self.inner.settings.clone()
    }

    /// Every type, by name; the file's before a shadowed API one.
    pub fn types(&self) -> Vec<Entry<TypeDefinition>> {
        let state = self.snapshot();
        let file = self
            .inner
            .file
            .types
            .iter()
            .map(|(name, definition)| file_entry(name, definition));
        let api = state
            .api
            .types
            .iter()
            .map(|(name, definition)| api_entry(name, definition, &state.problems.types));
        let mut entries: Vec<_> = file.chain(api).collect();
        // Stable: the file's entry stays first for a shared name.
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries
    }

    /// The type in force under `name` (the file's wins), else a stored API
    /// type that is out of force.
    pub fn get_type(&self, name: &str) -> Option<Entry<TypeDefinition>> {
        if let Some(definition) = self.inner.file.types.get(name) {
            return Some(file_entry(name, definition));
        }
        let state = self.snapshot();
        let definition = state.api.types.get(name)?;
        Some(api_entry(name, definition, &state.problems.types))
    }

    /// Creates or replaces an API type; returns it and whether it is new.
    pub async fn put_type(
        &self,
        name: &str,
        definition: TypeDefinition,
    ) -> Result<(Entry<TypeDefinition>, bool), CatalogError> {
        to_the_end(self.clone().put_type_locked(name.to_owned(), definition)).await
    }

    async fn put_type_locked(
        self,
        name: String,
        definition: TypeDefinition,
    ) -> Result<(Entry<TypeDefinition>, bool), CatalogError> {
        let _writer = self.inner.writer.lock().await;
        let state = self.snapshot();
        if self.inner.file.types.contains_key(&name) {
            return Err(file_defined("type", &name));
        }
        definition
            .check(&name, &self.inner.file.enabled)
            .map_err(|error| CatalogError::InvalidType {
                name: name.clone(),
                error,
            })?;
        let mut next = state.api.clone();
        let created = next
            .types
            .insert(name.clone(), definition.clone())
            .is_none();
        let write = self.inner.table.put_type(&name, &definition);
        let state = self.apply(next, write).await?;
        let stored = &state.api.types[&name];
        Ok((api_entry(&name, stored, &state.problems.types), created))
    }

    /// Deletes an API type. Rules that notify it keep working with the
    /// defaults of an unknown type.
    pub async fn delete_type(&self, name: &str) -> Result<(), CatalogError> {
        to_the_end(self.clone().delete_type_locked(name.to_owned())).await
    }

    async fn delete_type_locked(self, name: String) -> Result<(), CatalogError> {
        let _writer = self.inner.writer.lock().await;
        let state = self.snapshot();
        if self.inner.file.types.contains_key(&name) {
            return Err(file_defined("type", &name));
        }
        let mut next = state.api.clone();
        if next.types.remove(&name).is_none() {
            return Err(not_found("type", &name));
        }
        let write = self.inner.table.delete(CatalogKind::Type, &name);
        self.apply(next, write).await?;
        Ok(())
    }

    /// Every rule: the file's in file order, then the API's by name.
    pub fn rules(&self) -> Vec<Entry<Rule>> {
        let state = self.snapshot();
        let file = self.inner.file.rules.iter().map(file_rule_entry);
        let api = state
            .api
            .rules
            .iter()
            .map(|(name, rule)| api_entry(name, rule, &state.problems.rules));
        file.chain(api).collect()
    }

    /// The rule named `name`: the file's, else the API's.
    pub fn get_rule(&self, name: &str) -> Option<Entry<Rule>> {
        if let Some(rule) = self.file_rule(name) {
            return Some(file_rule_entry(rule));
        }
        let state = self.snapshot();
        let rule = state.api.rules.get(name)?;
        Some(api_entry(name, rule, &state.problems.rules))
    }

    /// Creates or replaces an API rule; returns it and whether it is new.
    pub async fn put_rule(&self, rule: Rule) -> Result<(Entry<Rule>, bool), CatalogError> {
        to_the_end(self.clone().put_rule_locked(rule)).await
    }

    async fn put_rule_locked(self, rule: Rule) -> Result<(Entry<Rule>, bool), CatalogError> {
        let _writer = self.inner.writer.lock().await;
        let state = self.snapshot();
        if self.file_rule(&rule.name).is_some() {
            return Err(file_defined("rule", &rule.name));
        }
        rule.validate()?;
        let name = rule.name.clone();
        let mut next = state.api.clone();
        let created = next.rules.insert(name.clone(), rule.clone()).is_none();
        let write = self.inner.table.put_rule(&rule);
        let state = self.apply(next, write).await?;
        let stored = &state.api.rules[&name];
        Ok((api_entry(&name, stored, &state.problems.rules), created))
    }

    /// Deletes an API rule. Delayed triggers it already scheduled are
    /// dropped when due: the engine fires only rules in force.
    pub async fn delete_rule(&self, name: &str) -> Result<(), CatalogError> {
        to_the_end(self.clone().delete_rule_locked(name.to_owned())).await
    }

    async fn delete_rule_locked(self, name: String) -> Result<(), CatalogError> {
        let _writer = self.inner.writer.lock().await;
        let state = self.snapshot();
        if self.file_rule(&name).is_some() {
            return Err(file_defined("rule", &name));
        }
        let mut next = state.api.clone();
        if next.rules.remove(&name).is_none() {
            return Err(not_found("rule", &name));
        }
        let write = self.inner.table.delete(CatalogKind::Rule, &name);
        self.apply(next, write).await?;
        Ok(())
    }

    /// Composes the settings of `next` (refusing it if they do not
    /// build), then runs `write` (one committed statement), then puts both
    /// in force and returns the new state. The caller holds the writer
    /// lock. Refused or failed, nothing changed: `write` is not started
    /// before the settings build, and a failed statement commits nothing.
    async fn apply<T>(
        &self,
        next: ApiDefinitions,
        write: impl Future<Output = Result<T, StorageError>>,
    ) -> Result<Arc<State>, CatalogError> {
        let (settings, problems) = compose(&self.inner.file, &next)?;
        write.await?;
        self.inner.settings.replace(settings);
        let state = Arc::new(State {
            api: next,
            problems,
        });
        *self
            .inner
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::clone(&state);
        Ok(state)
    }

    fn file_rule(&self, name: &str) -> Option<&Rule> {
        self.inner.file.rules.iter().find(|rule| rule.name == name)
    }

    fn snapshot(&self) -> Arc<State> {
        // The state is only ever assigned whole, so a panic elsewhere
        // cannot have left it half-changed.
        Arc::clone(
            &self
                .inner
                .state
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }
}

/// Runs a change on a task of its own and waits for it. The caller may go
/// away mid-change (a gRPC client that hangs up drops its handler's
/// future); the change still runs to its end, because one stopped between
/// its commit and putting the new state in force would leave storage ahead
/// of what the engine and the API see until the next start.
async fn to_the_end<T: Send + 'static>(
    change: impl Future<Output = Result<T, CatalogError>> + Send + 'static,
) -> Result<T, CatalogError> {
    match tokio::spawn(change).await {
        Ok(result) => result,
        Err(error) => match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Cancelled: only a runtime shutting down does that.
            Err(error) => Err(CatalogError::Storage(StorageError::Unavailable(
                error.to_string(),
            ))),
        },
    }
}

/// The engine's settings from the file's definitions plus the API's that
/// are in force, and why the others are not.
fn compose(
    file: &FileDefinitions,
    api: &ApiDefinitions,
) -> Result<(EngineSettings, Problems), CatalogError> {
    let mut problems = Problems::default();
    let mut types = file.types.clone();
    for (name, definition) in &api.types {
        let problem = if file.types.contains_key(name) {
            Some(
                "the config file defines a type of the same name, which is used instead".to_owned(),
            )
        } else {
            definition
                .check(name, &file.enabled)
                .err()
                .map(|error| format!("no longer valid against the config file: {error}"))
        };
        match problem {
            Some(problem) => {
                problems.types.insert(name.clone(), problem);
            }
            None => {
                types.insert(name.clone(), definition.clone());
            }
        }
    }

    let mut rules = file.rules.clone();
    for (name, rule) in &api.rules {
        if file.rules.iter().any(|file_rule| file_rule.name == *name) {
            let problem = "the config file defines a rule of the same name, which is used instead";
            problems.rules.insert(name.clone(), problem.to_owned());
        } else if let Err(error) = rule.validate() {
            problems
                .rules
                .insert(name.clone(), format!("no longer valid: {error}"));
        } else {
            rules.push(rule.clone());
        }
    }
    validate_rules(&rules)?;

    let definitions = types
        .iter()
        .filter(|(_, definition)| definition.templates != TypeTemplates::default())
        .map(|(name, definition)| (name.clone(), definition.templates.clone()))
        .collect();
    // Every type was checked above (the file's at load), so this only
    // fails if the checks and the engine's compilation disagree.
    let templates =
        TemplateSet::from_definitions(definitions).map_err(|error| CatalogError::InvalidType {
            name: "*".to_owned(),
            error: DefinitionError {
                field: "templates".into(),
                message: error.to_string(),
            },
        })?;
    let webhook_urls = types
        .iter()
        .filter_map(|(name, definition)| Some((name.clone(), definition.webhook_url.clone()?)))
        .collect();
    let defaults = OperatorDefaults {
        types: types
            .iter()
            .map(|(name, definition)| (name.clone(), definition.defaults()))
            .collect(),
    };
    let throttles = crate::throttle::Throttles::new(types.iter().map(|(name, definition)| {
        (
            name.as_str(),
            definition.throttle.as_ref(),
            definition.category.as_deref(),
        )
    }));
    let digest_keys = types
        .iter()
        .filter_map(|(name, definition)| Some((name.clone(), definition.digest_key.clone()?)))
        .collect();
    let workflows = types
        .iter()
        .filter(|(_, definition)| !definition.steps.is_empty())
        .map(|(name, definition)| (name.clone(), definition.steps.clone()))
        .collect();
    let settings = EngineSettings {
        defaults,
        templates,
        enabled: file.enabled.clone(),
        webhook_urls,
        rules,
        throttles,
        digest_keys,
        workflows,
        subscriptions: file.subscriptions.clone(),
    };
    Ok((settings, problems))
}

fn file_entry(name: &str, definition: &TypeDefinition) -> Entry<TypeDefinition> {
    Entry {
        name: name.to_owned(),
        definition: definition.clone(),
        source: Source::File,
        problem: None,
    }
}

fn file_rule_entry(rule: &Rule) -> Entry<Rule> {
    Entry {
        name: rule.name.clone(),
        definition: rule.clone(),
        source: Source::File,
        problem: None,
    }
}

fn api_entry<T: Clone>(
    name: &str,
    definition: &T,
    problems: &BTreeMap<String, String>,
) -> Entry<T> {
    Entry {
        name: name.to_owned(),
        definition: definition.clone(),
        source: Source::Api,
        problem: problems.get(name).cloned(),
    }
}

fn file_defined(kind: &'static str, name: &str) -> CatalogError {
    CatalogError::FileDefined {
        kind,
        name: name.to_owned(),
    }
}

fn not_found(kind: &'static str, name: &str) -> CatalogError {
    CatalogError::NotFound {
        kind,
        name: name.to_owned(),
    }
}

#[cfg(test)]
mod tests;
