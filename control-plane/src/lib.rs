//! The Nudge control plane: it ingests the batches agents push over gRPC,
//! stores each event once (dedupe by envelope id), turns events into
//! notifications and delivers them on every channel, serves end users their
//! inbox, and serves operators an HTTP admin API, a gRPC management API and
//! Prometheus metrics.
//!
//! # Layout
//!
//! | module | what it does |
//! |---|---|
//! | [`config`] | settings: flags, `NUDGE_CP_*` env vars, defaults, validation |
//! | [`engine_config`] | the engine's TOML file: channels, retry, types, rules, retention |
//! | [`event`] | the event vocabulary: events, profiles, ingest outcomes, cursors |
//! | [`storage`] | the storage boundary: SQLite (embedded default) or PostgreSQL, every table and query; the events store |
//! | [`grpc`] | tonic server: `nudge.v1.Ingest` (agent tokens or client certificates, `grpc::agent_auth`), `nudge.v1.Management` and `nudge.v1.Analytics` (admin token), health, reflection; optional TLS/mTLS |
//! | [`http`] | axum HTTP/JSON API: `/v1/admin/*` (admin token), `/v1/me/*` (user tokens, live stream), signed links and callbacks, the web inbox, `/openapi.json` |
//! | [`admin`] | operations port: `/metrics`, `/healthz`, `/readyz` |
//! | [`metrics`] | the Prometheus registry and every metric |
//! | [`csv`] | one CSV field, quoted and formula-safe, for every CSV export |
//! | [`chunks`] | documents written in chunks while they are sent (streamed exports), memory bounded |
//! | [`money`] | exact amounts (micro-units) for costs and outcomes |
//! | `prune` | hourly task that trims the dedupe window |
//! | [`privacy`] | erase and export a user; retention by age (hourly task) |
//! | [`analytics`] | activity and delivery rollups (a background task) and their reports |
//!
//! The notification engine, wired together in [`run`]:
//!
//! | module | what it does |
//! |---|---|
//! | [`engine`] | tails the event feed: notify calls and rules become notifications, planned into deliveries |
//! | [`rules`] | rules on tracked events, delayed triggers and their cancellation |
//! | [`notifications`] | notifications, created idempotently by source event and idempotency key |
//! | [`preferences`] | operator defaults, user switches, quiet hours, digest times; `resolve` |
//! | [`digest`] | notifications held for hourly, daily and weekly digests |
//! | [`templates`] | minijinja templates per type and channel, digests |
//! | [`catalog`] | types and rules from the config file and the management API, composed into the engine's settings |
//! | [`devices`] | users' push tokens and subscriptions, deactivated when providers report them gone |
//! | [`delivery`] | the durable delivery queue, retry policy, dead letters, dispatcher, engagement states |
//! | [`workflow`] | types sent in steps (channel, wait, wait until a local time); a read or click cancels later steps |
//! | [`send_check`] | the last look before a held delivery's send: a workflow step's gate, a cancelled broadcast |
//! | [`channels`] | the `Channel` trait; in-app, email, SMS, webhook, APNs, FCM, Web Push |
//! | [`inbox`] | users' in-app notifications, read state, counts and change log for live streams |
//! | [`broadcasts`] | topics users follow, and broadcasts to a topic or a segment, fanned out page by page |
//! | [`links`] | signed links in emails: one-click unsubscribe (RFC 8058), open pixel, click tracking |
//!
//! [`run`] takes already-bound listeners, so tests bind `127.0.0.1:0` and the
//! binary stays a thin wrapper (`src/main.rs`).

pub mod admin;
pub mod analytics;
pub mod broadcasts;
pub mod catalog;
pub mod channels;
pub mod chunks;
pub mod config;
pub mod csv;
pub mod delivery;
pub mod devices;
pub mod digest;
pub mod engine;
pub mod engine_config;
pub mod event;
pub mod grpc;
pub mod housekeeping;
pub mod http;
pub mod inbox;
pub mod links;
pub mod metrics;
pub mod money;
pub mod notifications;
pub mod preferences;
pub mod privacy;
#[cfg(test)]
mod proptest_cases;
pub mod rules;
pub mod send_check;
pub mod storage;
pub mod templates;
pub mod throttle;
pub mod workflow;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::{Config, ConfigError, LogFormat};

use crate::admin::Readiness;
use crate::metrics::Metrics;
use crate::storage::{StorageError, Stores};

/// The three sockets the control plane serves, bound before [`run`].
#[derive(Debug)]
pub struct Listeners {
    /// gRPC: agents push here.
    pub grpc: TcpListener,
    /// HTTP/JSON API.
    pub http: TcpListener,
    /// Operations: metrics and probes.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses of `config`; an error names the setting.
    pub async fn bind(config: &Config) -> Result<Self, Error> {
        Ok(Listeners {
            grpc: bind("NUDGE_CP_GRPC_LISTEN", config.grpc_listen).await?,
            http: bind("NUDGE_CP_HTTP_LISTEN", config.http_listen).await?,
            admin: bind("NUDGE_CP_ADMIN_LISTEN", config.admin_listen).await?,
        })
    }
}

async fn bind(setting: &'static str, addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind {
        setting,
        addr,
        source,
    })
}

/// Why the control plane could not start or stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr} ({setting}): {source}")]
    Bind {
        setting: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("grpc server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("{server} server failed: {source}")]
    Serve {
        server: &'static str,
        source: std::io::Error,
    },
    #[error("NUDGE_CP_CONFIG: {0}")]
    EngineConfig(#[from] engine_config::EngineConfigError),
    /// A TLS file of the gRPC listener cannot be used (names the setting).
    #[error(transparent)]
    Tls(#[from] nudge_tls::TlsError),
    #[error("notification engine: {0}")]
    Engine(#[from] engine::EngineError),
    #[error("inbox: {0}")]
    Inbox(#[from] inbox::InboxError),
    #[error("delivery queue: {0}")]
    Queue(#[from] delivery::QueueError),
    #[error("catalog (types and rules): {0}")]
    Catalog(#[from] catalog::CatalogError),
    #[error("privacy: {0}")]
    Privacy(#[from] privacy::PrivacyError),
    #[error("analytics: {0}")]
    Analytics(#[from] analytics::AnalyticsError),
    #[error("a server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Applies the migrations this build knows to the configured database
/// (under its migration lock) and closes it; answers the schema version.
pub async fn migrate(config: &Config) -> Result<i64, Error> {
    config.validate()?;
    let database =
        storage::Database::open(&config.database_settings()?, storage::StorageMetrics::new())
            .await?;
    database.close().await;
    Ok(storage::latest_schema_version())
}

/// Runs the control plane until `shutdown` is cancelled (or a server fails),
/// then drains: readiness goes 503 and gRPC health NOT_SERVING at once,
/// in-flight calls finish, the store is flushed, the admin port closes last.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    config.validate()?;
    let grpc_tls = grpc::tls::GrpcTls::load(&config.tls)?;
    // Every file is checked before the database is touched: a typo in the
    // engine file must not leave a new database (or a migrated one) behind.
    let engine_config = match config.engine_config.clone() {
        Some(path) => {
            tokio::task::spawn_blocking(move || engine_config::EngineConfig::load(&path)).await??
        }
        None => engine_config::EngineConfig::default(),
    };
    let metrics = Metrics::new()?;
    let storage_metrics = storage::StorageMetrics::new();
    storage_metrics.register(metrics.registry())?;
    let mut stores = Stores::open(
        &config.database_settings()?,
        &config.data_dir,
        storage_metrics,
    )
    .await?;
    // Before anything takes a clone of the device store or the queue.
    stores.devices.set_max_per_user(config.max_devices_per_user);
    stores.deliveries.set_claim_lease(config.delivery_claim_ttl);
    let store = stores.events.clone();
    let replica = replica_settings(&config);
    let engine = notification_engine(&stores, &metrics, &engine_config, replica.clone()).await?;
    let analytics = analytics::Analytics::open(
        &stores,
        engine_config.analytics(),
        Arc::clone(&engine.clock),
        metrics.registry(),
    )?;
    let privacy = privacy::Privacy::open(&stores)?.with_analytics(analytics.clone());
    let (events, dedupe) = (store.event_count().await?, store.dedupe_count().await?);
    metrics.set_store_sizes(events, dedupe);
    tracing::info!(
        data_dir = %config.data_dir.display(),
        database = %stores.database.location(),
        events,
        dedupe_entries = dedupe,
        grpc = ?listeners.grpc.local_addr().ok(),
        http = ?listeners.http.local_addr().ok(),
        admin = ?listeners.admin.local_addr().ok(),
        "control plane starting"
    );

    let readiness = Readiness::default();
    // Our own token: a failing server stops the others without cancelling
    // the caller's token.
    let stop = shutdown.child_token();
    // The admin port outlives the drain so probes can watch it.
    let admin_stop = CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve(
        listeners.admin,
        metrics.clone(),
        readiness.clone(),
        stores.database.clone(),
        admin_stop.clone(),
    ));

    let mut tasks: JoinSet<Result<(), Error>> = JoinSet::new();
    tasks.spawn({
        let state = grpc::GrpcState {
            store: store.clone(),
            metrics: metrics.clone(),
            catalog: engine.catalog.clone(),
            notifications: engine.notifications.clone(),
            queue: engine.queue.clone(),
            preferences: engine.preferences.clone(),
            devices: engine.devices.clone(),
            admin_token: config.admin_token.clone(),
            analytics: analytics.clone(),
            ingest_auth: grpc::agent_auth::IngestAuth::from_config(&config),
            topics: stores.topics.clone(),
            broadcasts: stores.broadcasts.clone(),
        };
        let stop = stop.clone();
        async move {
            grpc::serve(listeners.grpc, state, grpc_tls, stop)
                .await
                .map_err(Error::from)
        }
    });
    tasks.spawn({
        let state = http::HttpState {
            store: store.clone(),
            notifications: engine.notifications.clone(),
            queue: engine.queue.clone(),
            preferences: engine.preferences.clone(),
            devices: engine.devices.clone(),
            settings: engine.settings.clone(),
            admin_token: config.admin_token.clone(),
            unsubscribe: engine_config.unsubscribe_links(),
            sms_callbacks: engine_config
                .sms
                .as_ref()
                .and_then(channels::sms::SmsConfig::status_callback_auth),
            tracking: engine_config.tracking_links(),
            email_callbacks: engine_config
                .email
                .as_ref()
                .and_then(channels::email::EmailConfig::callback_auth),
            callback_ids: stores.callback_ids.clone(),
            inbox: engine.inbox.clone(),
            user_tokens: config.user_tokens(),
            live: http::LiveStream::new(stop.clone(), config.stream_limits(), metrics.registry())?,
            privacy: privacy.clone(),
            request_duration: metrics.http_request_duration.clone(),
            analytics: analytics.clone(),
            topics: stores.topics.clone(),
            broadcasts: stores.broadcasts.clone(),
        };
        let stop = stop.clone();
        async move {
            axum::serve(listeners.http, http::router(state))
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .map_err(|source| Error::Serve {
                    server: "http",
                    source,
                })
        }
    });
    tasks.spawn({
        let housekeeping = housekeeping::standard(
            &stores,
            &privacy,
            &metrics,
            engine_config.retention(),
            engine_config.device_retention(),
            config.dedupe_window,
        )?
        .shared(stores.leases.clone(), &replica.replica);
        let stop = stop.clone();
        async move {
            housekeeping.run(stop).await;
            Ok(())
        }
    });
    tasks.spawn({
        let waker = inbox::snooze::Waker::new(engine.inbox.clone(), metrics.registry())?;
        let stop = stop.clone();
        async move {
            waker.run(stop).await;
            Ok(())
        }
    });
    tasks.spawn({
        let stop = stop.clone();
        async move {
            engine.engine.run(stop).await;
            Ok(())
        }
    });
    tasks.spawn({
        let (analytics, stop) = (analytics.clone(), stop.clone());
        // One replica folds at a time (see `analytics::worker`).
        let turn = storage::Singleton::new(
            stores.leases.clone(),
            "job/analytics",
            &replica.replica,
            config.lease_ttl,
        );
        async move {
            analytics.run(stop.clone(), Some(turn)).await;
            // A worker with nothing to do (rollups switched off) may end
            // early; that must not stop the process.
            stop.cancelled().await;
            Ok(())
        }
    });
    tasks.spawn({
        let stop = stop.clone();
        async move { engine.dispatcher.run(stop).await.map_err(Error::from) }
    });
    tasks.spawn({
        let (readiness, stop) = (readiness.clone(), stop.clone());
        async move {
            stop.cancelled().await;
            readiness.set(false);
            tracing::info!("control plane draining");
            Ok(())
        }
    });
    // The gRPC listener is bound and its server spawned: connections are
    // accepted from here on.
    readiness.set(true);

    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        // Every task runs until stop; one ending means the process is
        // stopping, whether it failed or not.
        stop.cancel();
        let error = match joined {
            Ok(Ok(())) => continue,
            Ok(Err(error)) => error,
            Err(error) => Error::Task(error),
        };
        tracing::error!(%error, "control plane task failed");
        first_error.get_or_insert(error);
    }

    let closed = stores.close().await;
    admin_stop.cancel();
    let admin_result = admin_task.await;
    if let Some(error) = first_error {
        return Err(error);
    }
    closed?;
    admin_result?.map_err(|source| Error::Serve {
        server: "admin",
        source,
    })?;
    tracing::info!("control plane stopped");
    Ok(())
}

/// Who this process is among the replicas on its database: the
/// configured name, else the host name (the pod name on Kubernetes).
fn replica_settings(config: &Config) -> engine::FeedSettings {
    let host = config
        .replica_name
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "control-plane".to_owned());
    engine::FeedSettings::new(&host, config.lease_ttl)
}

/// The notification engine's two workers: the trigger path (events →
/// notifications → deliveries) and the dispatcher (deliveries → channels).
struct NotificationEngine {
    engine: engine::Engine,
    dispatcher: delivery::Dispatcher,
    /// For the operator HTTP routes.
    notifications: notifications::NotificationStore,
    queue: delivery::DeliveryQueue,
    preferences: preferences::PreferenceStore,
    devices: devices::DeviceStore,
    settings: engine::SettingsHandle,
    /// Types and rules, for the management API.
    catalog: catalog::Catalog,
    /// Users' in-app notifications, for the inbox API.
    inbox: inbox::InboxStore,
    /// The time the engine and dispatcher go by, for the analytics too.
    clock: Arc<dyn delivery::Clock>,
}

/// Builds the engine over the store's database with the channels the
/// engine config enables: in-app always, email and webhook when configured.
async fn notification_engine(
    stores: &Stores,
    metrics: &Metrics,
    config: &engine_config::EngineConfig,
    replica: engine::FeedSettings,
) -> Result<NotificationEngine, Error> {
    let clock: Arc<dyn delivery::Clock> = Arc::new(delivery::SystemClock);
    let queue = stores.deliveries.clone();
    let delivery_metrics = delivery::DeliveryMetrics::new()?;
    delivery_metrics.register(metrics.registry())?;
    let inbox = stores.inbox.clone();
    let in_app = channels::in_app::InAppChannel::new(inbox.clone());
    let devices = stores.devices.clone();
    let mut dispatcher = delivery::Dispatcher::new(
        queue.clone(),
        config.dispatcher_config(),
        Arc::clone(&clock),
        delivery_metrics,
    )
    .with_channel(Arc::new(in_app))
    .on_invalid_recipient(devices::deactivation_hook(
        devices.clone(),
        Arc::clone(&clock),
    ))
    .with_send_check(send_check::checker(
        queue.clone(),
        inbox.clone(),
        stores.broadcasts.clone(),
    ));
    if let Some(email) = &config.email {
        dispatcher =
            dispatcher.with_channel(Arc::new(channels::email::EmailChannel::new(email.clone())?));
    }
    if let Some(sms) = &config.sms {
        dispatcher =
            dispatcher.with_channel(Arc::new(channels::sms::SmsChannel::new(sms.clone())?));
    }
    if let Some(webhook) = &config.webhook {
        dispatcher = dispatcher.with_channel(Arc::new(channels::webhook::WebhookChannel::new(
            webhook.clone(),
        )?));
    }
    if let Some(apns) = &config.apns {
        dispatcher =
            dispatcher.with_channel(Arc::new(channels::apns::ApnsChannel::new(apns.clone())?));
    }
    if let Some(fcm) = &config.fcm {
        dispatcher =
            dispatcher.with_channel(Arc::new(channels::fcm::FcmChannel::new(fcm.clone())?));
    }
    if let Some(web_push) = &config.web_push {
        dispatcher = dispatcher.with_channel(Arc::new(channels::web_push::WebPushChannel::new(
            web_push.clone(),
        )?));
    }
    // The file's types and rules plus the management API's.
    let catalog = catalog::Catalog::open(stores.catalog.clone(), config).await?;
    let settings = catalog.settings();
    let notifications = stores.notifications.clone();
    let preferences = stores.preferences.clone();
    let parts = engine::EngineParts {
        store: stores.events.clone(),
        notifications: notifications.clone(),
        preferences: preferences.clone(),
        queue: queue.clone(),
        devices: devices.clone(),
        cursors: stores.cursors.clone(),
        leases: stores.leases.clone(),
        replica,
        digests: stores.digests.clone(),
        pending: stores.pending.clone(),
        topics: stores.topics.clone(),
        broadcasts: stores.broadcasts.clone(),
        clock: Arc::clone(&clock),
    };
    let engine = engine::Engine::new(parts, settings.clone(), metrics.registry())?
        .with_unsubscribe_links(config.unsubscribe_links())
        .with_tracking_links(config.tracking_links());
    Ok(NotificationEngine {
        engine,
        dispatcher,
        notifications,
        queue,
        preferences,
        devices,
        settings,
        catalog,
        inbox,
        clock,
    })
}
