//! Start-up settings: every one has a command-line flag, an environment
//! variable (`NUDGE_CP_…`) and a default, and is checked before anything
//! binds or opens.
//!
//! Flags win over environment variables. Each flag's value name *is* its
//! environment variable, so clap's parse errors ("invalid value 'x' for
//! '--grpc-listen <NUDGE_CP_GRPC_LISTEN>'") name the setting an operator has to
//! fix; checks beyond parsing live in [`Config::validate`]. `main` exits with
//! code 64 (EX_USAGE) on either kind of error.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::storage::{DatabaseLocation, DatabaseSettings};

/// The shortest dedupe window accepted: agents can buffer for days during an
/// outage, and a resend after the window would be stored twice.
pub const MIN_DEDUPE_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// The highest `NUDGE_CP_MAX_DEVICES_PER_USER` accepted: beyond it one
/// notification is a flood of provider calls.
const MAX_DEVICES_PER_USER: usize = 1000;

/// Settings of the control plane.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "nudge-control-plane",
    version,
    about = "Nudge control plane: ingest, storage and admin APIs"
)]
pub struct Config {
    /// Address of the gRPC server agents push to (Ingest, health, reflection).
    /// Loopback by default: a listener other hosts can reach needs agents to
    /// authenticate (NUDGE_CP_AGENT_TOKENS or NUDGE_CP_TLS_CLIENT_CA).
    #[arg(
        long,
        env = "NUDGE_CP_GRPC_LISTEN",
        value_name = "NUDGE_CP_GRPC_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    pub grpc_listen: SocketAddr,

    /// Address of the HTTP/JSON API (browser API and `/v1/admin/*`).
    #[arg(
        long,
        env = "NUDGE_CP_HTTP_LISTEN",
        value_name = "NUDGE_CP_HTTP_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub http_listen: SocketAddr,

    /// Address of the operations port: `/metrics`, `/healthz`, `/readyz`.
    #[arg(
        long,
        env = "NUDGE_CP_ADMIN_LISTEN",
        value_name = "NUDGE_CP_ADMIN_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub admin_listen: SocketAddr,

    /// Directory of the embedded store; created when missing.
    #[arg(
        long,
        env = "NUDGE_CP_DATA_DIR",
        value_name = "NUDGE_CP_DATA_DIR",
        default_value = "./data/control-plane"
    )]
    pub data_dir: PathBuf,

    /// Where the database is: `postgres://USER:PASSWORD@HOST:PORT/DB` for
    /// PostgreSQL (production, replicas), `sqlite://PATH` for an SQLite
    /// file. Unset: SQLite in `nudge.sqlite3` under NUDGE_CP_DATA_DIR.
    #[arg(
        long,
        env = "NUDGE_CP_DATABASE_URL",
        value_name = "NUDGE_CP_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<DatabaseUrl>,

    /// Connections in the PostgreSQL pool.
    #[arg(
        long,
        env = "NUDGE_CP_DATABASE_POOL_SIZE",
        value_name = "NUDGE_CP_DATABASE_POOL_SIZE",
        default_value_t = 16
    )]
    pub database_pool_size: u32,

    /// How long start-up waits for the database before it gives up
    /// (humantime, e.g. `30s`).
    #[arg(long, env = "NUDGE_CP_DATABASE_CONNECT_TIMEOUT", value_name = "NUDGE_CP_DATABASE_CONNECT_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub database_connect_timeout: Duration,

    /// Bearer token operators present to `/v1/admin/*`. When unset those
    /// routes answer 503 `admin_disabled`.
    #[arg(
        long,
        env = "NUDGE_CP_ADMIN_TOKEN",
        value_name = "NUDGE_CP_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<AdminToken>,

    /// Tokens agents must present on Ingest as the metadata
    /// `authorization: Bearer <token>`, comma-separated (several at once, so
    /// a token is rotated without refusing anyone). At least 16 visible
    /// ASCII characters each. Required on every Push when set, also with
    /// mTLS.
    #[arg(
        long,
        env = "NUDGE_CP_AGENT_TOKENS",
        value_name = "NUDGE_CP_AGENT_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub agent_tokens: Vec<crate::grpc::agent_auth::AgentToken>,

    /// For local development only: let Ingest accept pushes without a client
    /// certificate or agent token on a listener other hosts can reach.
    /// Without it, such a start is refused (exit 64). Logged as a WARN and
    /// exported as `nudge_cp_grpc_unauthenticated_ingest 1`.
    #[arg(
        long,
        env = "NUDGE_CP_GRPC_INSECURE_ALLOW_UNAUTHENTICATED",
        value_name = "NUDGE_CP_GRPC_INSECURE_ALLOW_UNAUTHENTICATED",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub grpc_insecure_allow_unauthenticated: bool,

    /// The HS256 secret the application's backend signs end users' tokens
    /// with (at least 32 bytes). When unset the `/v1/me/*` routes answer
    /// 503 `user_auth_disabled`.
    #[arg(
        long,
        env = "NUDGE_CP_USER_TOKEN_SECRET",
        value_name = "NUDGE_CP_USER_TOKEN_SECRET",
        hide_env_values = true
    )]
    pub user_token_secret: Option<crate::http::user_auth::UserTokenSecret>,

    /// When set, a user token's `aud` (a string or an array) must name this
    /// audience.
    #[arg(
        long,
        env = "NUDGE_CP_USER_TOKEN_AUDIENCE",
        value_name = "NUDGE_CP_USER_TOKEN_AUDIENCE"
    )]
    pub user_token_audience: Option<String>,

    /// When set, a user token's `iss` must equal this issuer.
    #[arg(
        long,
        env = "NUDGE_CP_USER_TOKEN_ISSUER",
        value_name = "NUDGE_CP_USER_TOKEN_ISSUER"
    )]
    pub user_token_issuer: Option<String>,

    /// The longest a user token may live (humantime, 1m to 365d):
    /// `exp - iat`, or `exp - now` for a token without `iat`.
    #[arg(long, env = "NUDGE_CP_USER_TOKEN_MAX_LIFETIME", value_name = "NUDGE_CP_USER_TOKEN_MAX_LIFETIME", default_value = "24h", value_parser = humantime::parse_duration)]
    pub user_token_max_lifetime: Duration,

    /// How long event ids are remembered for dedupe (humantime, e.g. `30d`;
    /// at least 7d).
    #[arg(long, env = "NUDGE_CP_DEDUPE_WINDOW", value_name = "NUDGE_CP_DEDUPE_WINDOW", default_value = "30d", value_parser = humantime::parse_duration)]
    pub dedupe_window: Duration,

    /// How long a replica's leases (event-feed partitions, singleton
    /// tasks) last without renewal (humantime, 2s to 5m): how long the
    /// work of a replica that died waits before another takes it over.
    /// Leases are renewed every quarter of it.
    #[arg(long, env = "NUDGE_CP_LEASE_TTL", value_name = "NUDGE_CP_LEASE_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,

    /// How long a delivery claim holds before any replica may requeue it
    /// (humantime, 10s to 1h): keep it well above the channels' provider
    /// timeouts, or a slow send is sent twice; a replica killed mid-send
    /// has its deliveries resent after it.
    #[arg(long, env = "NUDGE_CP_DELIVERY_CLAIM_TTL", value_name = "NUDGE_CP_DELIVERY_CLAIM_TTL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub delivery_claim_ttl: Duration,

    /// This replica's name in the leases it holds (a random suffix is
    /// added per start). Defaults to the host name (the pod name on
    /// Kubernetes).
    #[arg(
        long,
        env = "NUDGE_CP_REPLICA_NAME",
        value_name = "NUDGE_CP_REPLICA_NAME"
    )]
    pub replica_name: Option<String>,

    /// Push devices (APNs, FCM, Web Push subscriptions) one user may hold
    /// per platform, 1 to 1000. Registering one more deletes the user's
    /// least reachable device on that platform (a deactivated one first,
    /// else the one seen least recently): one notification never fans out
    /// to more than this many devices per push channel.
    #[arg(
        long,
        env = "NUDGE_CP_MAX_DEVICES_PER_USER",
        value_name = "NUDGE_CP_MAX_DEVICES_PER_USER",
        // devices::DEFAULT_MAX_DEVICES_PER_USER, written out so the Helm
        // chart's check reads it; a test holds the two equal.
        default_value_t = 20
    )]
    pub max_devices_per_user: usize,

    /// The notification engine's TOML file: channels and their credentials,
    /// retry policy, concurrency, types and templates (see
    /// `control-plane/nudge.example.toml`). Unset: engine defaults, in-app
    /// channel only, no types configured.
    #[arg(
        long = "config",
        env = "NUDGE_CP_CONFIG",
        value_name = "NUDGE_CP_CONFIG"
    )]
    pub engine_config: Option<PathBuf>,

    /// Most live streams (`/v1/me/stream`, `/v1/me/events`) one user may
    /// hold open at once; more are refused with 429.
    // StreamLimits::default(), written out for the Helm chart's check (a
    // test holds them equal).
    #[arg(
        long,
        env = "NUDGE_CP_LIVE_MAX_STREAMS_PER_USER",
        value_name = "NUDGE_CP_LIVE_MAX_STREAMS_PER_USER",
        default_value_t = 16
    )]
    pub live_max_streams_per_user: usize,

    /// Most live streams open in this process across users; more are
    /// refused with 503.
    #[arg(
        long,
        env = "NUDGE_CP_LIVE_MAX_STREAMS",
        value_name = "NUDGE_CP_LIVE_MAX_STREAMS",
        default_value_t = 10000
    )]
    pub live_max_streams: usize,

    /// Log line format on stderr.
    #[arg(long, env = "NUDGE_CP_LOG_FORMAT", value_name = "NUDGE_CP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// TLS (and mTLS) on the gRPC listener.
    #[command(flatten)]
    pub tls: TlsSettings,

    /// A command other than serving (`dev-certs`).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// TLS on the gRPC listener (agents and the management API). The HTTP API
/// and the operations port are not affected: terminate TLS for them in
/// front (ingress) as before.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsSettings {
    /// PEM certificate chain (leaf first) of the gRPC listener. With
    /// NUDGE_CP_TLS_KEY, the listener speaks TLS only. Re-read when the file
    /// changes.
    #[arg(long, env = "NUDGE_CP_TLS_CERT", value_name = "NUDGE_CP_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of NUDGE_CP_TLS_CERT. Re-read when the file changes.
    #[arg(long, env = "NUDGE_CP_TLS_KEY", value_name = "NUDGE_CP_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// PEM bundle of the CAs that sign agents' client certificates: with it,
    /// a client certificate signed by one of them is required (mTLS).
    /// Re-read when the file changes.
    #[arg(
        long,
        env = "NUDGE_CP_TLS_CLIENT_CA",
        value_name = "NUDGE_CP_TLS_CLIENT_CA"
    )]
    pub tls_client_ca: Option<PathBuf>,

    /// How often the TLS files are checked for changes.
    #[arg(long, env = "NUDGE_CP_TLS_RELOAD_INTERVAL", value_name = "NUDGE_CP_TLS_RELOAD_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub tls_reload_interval: Duration,
}

impl TlsSettings {
    /// Checks that the settings make one whole: a certificate needs its
    /// key, a client CA needs the server side.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, message: &str| {
            Err(ConfigError {
                setting,
                message: message.to_owned(),
            })
        };
        let paths = [
            ("NUDGE_CP_TLS_CERT", &self.tls_cert),
            ("NUDGE_CP_TLS_KEY", &self.tls_key),
            ("NUDGE_CP_TLS_CLIENT_CA", &self.tls_client_ca),
        ];
        for (setting, path) in paths {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return invalid(setting, "is set but empty; unset it or name a PEM file");
            }
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return invalid("NUDGE_CP_TLS_KEY", "is required with NUDGE_CP_TLS_CERT");
            }
            (None, Some(_)) => {
                return invalid("NUDGE_CP_TLS_CERT", "is required with NUDGE_CP_TLS_KEY");
            }
            _ => {}
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return invalid(
                "NUDGE_CP_TLS_CLIENT_CA",
                "requires NUDGE_CP_TLS_CERT and NUDGE_CP_TLS_KEY (client certificates are asked for during a TLS handshake)",
            );
        }
        if self.tls_reload_interval.is_zero() {
            return invalid("NUDGE_CP_TLS_RELOAD_INTERVAL", "must be above zero");
        }
        Ok(())
    }
}

/// Commands besides serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Applies the database migrations this build knows (under the
    /// database's migration lock) and exits: run it once per upgrade
    /// before the new replicas start (the Helm chart's hook Job does).
    /// Serving migrates at start-up as well, so this is an ordering aid,
    /// not a requirement.
    Migrate,
    /// Writes a new development CA, a server certificate and an agent
    /// client certificate as PEM files (ca.pem, server.pem, server-key.pem,
    /// agent.pem, agent-key.pem), for trying TLS and mTLS locally. Not for
    /// production: use your own PKI (e.g. cert-manager).
    DevCerts(DevCertsArgs),
    /// Prints the OpenAPI 3.1 document of the HTTP API (what `GET
    /// /openapi.json` serves) and exits; needs no settings.
    Openapi,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DevCertsArgs {
    /// Directory to write into (created if missing); existing files are
    /// never overwritten.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// A DNS name or IP address agents use to reach the control plane; give
    /// it once per name.
    #[arg(long = "server-name", value_name = "NAME", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned()])]
    pub server_names: Vec<String>,

    /// Common name of the agent's client certificate.
    #[arg(long, value_name = "NAME", default_value = "nudge-agent")]
    pub agent_name: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The admin bearer token. Its `Debug` is redacted so logging the config
/// cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// The token's bytes, for the constant-time comparison.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Whether `presented` is this token. Compares without stopping at the
    /// first differing byte, so response time does not reveal how much of a
    /// guessed token was right (the length is not secret enough to hide).
    /// Shared by the HTTP admin routes and the gRPC management API.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.as_bytes();
        if presented.len() != expected.len() {
            return false;
        }
        let difference = presented
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (x, y)| acc | (x ^ y));
        std::hint::black_box(difference) == 0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl std::str::FromStr for AdminToken {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(AdminToken(s.to_owned()))
    }
}

impl From<&str> for AdminToken {
    fn from(value: &str) -> Self {
        AdminToken(value.to_owned())
    }
}

/// `NUDGE_CP_DATABASE_URL` as given. Parsing never fails here (a parse
/// error would echo the value, password and all); [`Config::validate`]
/// checks it and reports it redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.parse::<DatabaseLocation>() {
            Ok(location) => write!(f, "{location:?}"),
            Err(_) => f.write_str("DatabaseUrl(<unparsable, redacted>)"),
        }
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(DatabaseUrl(s.to_owned()))
    }
}

/// A setting that parsed but cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid {setting}: {message}")]
pub struct ConfigError {
    /// The environment variable naming the setting.
    pub setting: &'static str,
    pub message: String,
}

impl Config {
    /// How to open the database: `NUDGE_CP_DATABASE_URL`, or SQLite in the
    /// data dir.
    pub fn database_settings(&self) -> Result<DatabaseSettings, ConfigError> {
        let location = match &self.database_url {
            Some(url) => url.0.parse().map_err(|message| ConfigError {
                setting: "NUDGE_CP_DATABASE_URL",
                message,
            })?,
            None => DatabaseLocation::embedded(&self.data_dir),
        };
        Ok(DatabaseSettings {
            location,
            pool_size: self.database_pool_size,
            connect_timeout: self.database_connect_timeout,
        })
    }

    /// The user-token verifier, with its audience, issuer and lifetime
    /// rules; `None` without a secret.
    pub fn user_tokens(&self) -> Option<crate::http::user_auth::UserTokenSecret> {
        let policy = crate::http::user_auth::TokenPolicy {
            audience: self.user_token_audience.clone(),
            issuer: self.user_token_issuer.clone(),
            max_lifetime: i64::try_from(self.user_token_max_lifetime.as_secs()).unwrap_or(i64::MAX),
        };
        self.user_token_secret
            .clone()
            .map(|secret| secret.with_policy(policy))
    }

    /// The live stream's connection caps.
    pub fn stream_limits(&self) -> crate::http::StreamLimits {
        crate::http::StreamLimits {
            per_user: self.live_max_streams_per_user,
            total: self.live_max_streams,
        }
    }

    /// Checks what parsing cannot: ranges and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(Duration::from_secs(10)..=Duration::from_secs(3600)).contains(&self.delivery_claim_ttl)
        {
            return Err(ConfigError {
                setting: "NUDGE_CP_DELIVERY_CLAIM_TTL",
                message: format!(
                    "{} is outside 10s to 1h",
                    humantime::format_duration(self.delivery_claim_ttl)
                ),
            });
        }
        if !(Duration::from_secs(2)..=Duration::from_secs(300)).contains(&self.lease_ttl) {
            return Err(ConfigError {
                setting: "NUDGE_CP_LEASE_TTL",
                message: format!(
                    "{} is outside 2s to 5m",
                    humantime::format_duration(self.lease_ttl)
                ),
            });
        }
        if self.dedupe_window < MIN_DEDUPE_WINDOW {
            return Err(ConfigError {
                setting: "NUDGE_CP_DEDUPE_WINDOW",
                message: format!(
                    "{} is shorter than the minimum of 7d; a resend after the window would be stored twice",
                    humantime::format_duration(self.dedupe_window)
                ),
            });
        }
        if !(Duration::from_secs(60)..=Duration::from_secs(365 * 24 * 3600))
            .contains(&self.user_token_max_lifetime)
        {
            return Err(ConfigError {
                setting: "NUDGE_CP_USER_TOKEN_MAX_LIFETIME",
                message: format!(
                    "{} is outside 1m to 365d",
                    humantime::format_duration(self.user_token_max_lifetime)
                ),
            });
        }
        let claims = [
            ("NUDGE_CP_USER_TOKEN_AUDIENCE", &self.user_token_audience),
            ("NUDGE_CP_USER_TOKEN_ISSUER", &self.user_token_issuer),
        ];
        for (setting, value) in claims {
            if value.as_ref().is_some_and(|value| value.trim().is_empty()) {
                return Err(ConfigError {
                    setting,
                    message: "is set but empty; unset it to accept any".to_owned(),
                });
            }
        }
        if self
            .admin_token
            .as_ref()
            .is_some_and(|token| token.0.trim().is_empty())
        {
            return Err(ConfigError {
                setting: "NUDGE_CP_ADMIN_TOKEN",
                message: "is set but empty; unset it to disable the admin API".to_owned(),
            });
        }
        self.database_settings()?;
        if self.database_pool_size == 0 {
            return Err(ConfigError {
                setting: "NUDGE_CP_DATABASE_POOL_SIZE",
                message: "must be at least 1".to_owned(),
            });
        }
        if self.database_connect_timeout.is_zero() {
            return Err(ConfigError {
                setting: "NUDGE_CP_DATABASE_CONNECT_TIMEOUT",
                message: "must be above zero".to_owned(),
            });
        }
        if !(1..=MAX_DEVICES_PER_USER).contains(&self.max_devices_per_user) {
            return Err(ConfigError {
                setting: "NUDGE_CP_MAX_DEVICES_PER_USER",
                message: format!(
                    "{} is outside 1..={MAX_DEVICES_PER_USER}; each device of a user gets its own push per notification",
                    self.max_devices_per_user
                ),
            });
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError {
                setting: "NUDGE_CP_DATA_DIR",
                message: "is empty".to_owned(),
            });
        }
        if self
            .engine_config
            .as_ref()
            .is_some_and(|path| path.as_os_str().is_empty())
        {
            return Err(ConfigError {
                setting: "NUDGE_CP_CONFIG",
                message: "is set but empty; unset it to run the engine with its defaults"
                    .to_owned(),
            });
        }
        if self.live_max_streams_per_user == 0 {
            return Err(ConfigError {
                setting: "NUDGE_CP_LIVE_MAX_STREAMS_PER_USER",
                message: "must be at least 1".to_owned(),
            });
        }
        if self.live_max_streams < self.live_max_streams_per_user {
            return Err(ConfigError {
                setting: "NUDGE_CP_LIVE_MAX_STREAMS",
                message: format!(
                    "{} is below NUDGE_CP_LIVE_MAX_STREAMS_PER_USER ({})",
                    self.live_max_streams, self.live_max_streams_per_user
                ),
            });
        }
        self.tls.validate()?;
        self.validate_ingest_auth()?;
        let listens = [
            ("NUDGE_CP_GRPC_LISTEN", self.grpc_listen),
            ("NUDGE_CP_HTTP_LISTEN", self.http_listen),
            ("NUDGE_CP_ADMIN_LISTEN", self.admin_listen),
        ];
        for (i, (name, addr)) in listens.iter().enumerate() {
            // Port 0 means "any free port" (tests), which never collides.
            let clash = listens[i + 1..]
                .iter()
                .find(|(_, other)| addr.port() != 0 && other == addr);
            if let Some((other_name, _)) = clash {
                return Err(ConfigError {
                    setting: name,
                    message: format!("{addr} is also used by {other_name}"),
                });
            }
        }
        Ok(())
    }
}

impl Config {
    /// Ingest is authenticated (client certificates or agent tokens), or
    /// reachable from this host only, or opened by the operator's explicit,
    /// loudly named choice; never open by accident.
    fn validate_ingest_auth(&self) -> Result<(), ConfigError> {
        if let [only] = self.agent_tokens.as_slice()
            && only.is_empty()
        {
            return Err(ConfigError {
                setting: "NUDGE_CP_AGENT_TOKENS",
                message: "is set but empty; unset it or give the accepted tokens".to_owned(),
            });
        }
        if let Some(problem) = self.agent_tokens.iter().find_map(|token| token.problem()) {
            return Err(ConfigError {
                setting: "NUDGE_CP_AGENT_TOKENS",
                message: problem,
            });
        }
        let authenticated = !self.agent_tokens.is_empty() || self.tls.tls_client_ca.is_some();
        if authenticated && self.grpc_insecure_allow_unauthenticated {
            return Err(ConfigError {
                setting: "NUDGE_CP_GRPC_INSECURE_ALLOW_UNAUTHENTICATED",
                message: "is true, but agents do authenticate (NUDGE_CP_AGENT_TOKENS or NUDGE_CP_TLS_CLIENT_CA is set); unset it".to_owned(),
            });
        }
        if !authenticated
            && !self.grpc_insecure_allow_unauthenticated
            && !self.grpc_listen.ip().is_loopback()
        {
            return Err(ConfigError {
                setting: "NUDGE_CP_GRPC_LISTEN",
                message: format!(
                    "{} is reachable from other hosts, and nothing authenticates the agents \
                     pushing to it: set NUDGE_CP_AGENT_TOKENS (tokens agents send) or \
                     NUDGE_CP_TLS_CLIENT_CA (client certificates, with NUDGE_CP_TLS_CERT and \
                     NUDGE_CP_TLS_KEY), or listen on loopback (127.0.0.1:50051); for local \
                     development only, NUDGE_CP_GRPC_INSECURE_ALLOW_UNAUTHENTICATED=true",
                    self.grpc_listen
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults are written out in the `#[arg]`s (the Helm chart's
    /// check reads them there); they are the modules' own.
    #[test]
    fn written_out_defaults_are_the_modules_defaults() {
        let config = Config::try_parse_from(["nudge-control-plane"]).unwrap();
        assert_eq!(
            config.max_devices_per_user,
            crate::devices::DEFAULT_MAX_DEVICES_PER_USER
        );
        let limits = crate::http::StreamLimits::default();
        assert_eq!(config.live_max_streams_per_user, limits.per_user);
        assert_eq!(config.live_max_streams, limits.total);
    }

    #[test]
    fn admin_token_matches_only_itself() {
        let token = AdminToken::from("abc");
        assert!(token.matches(b"abc"));
        assert!(!token.matches(b"abd"));
        assert!(!token.matches(b"abcd"));
        assert!(!token.matches(b""));
    }

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("nudge-control-plane").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_valid() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.dedupe_window, Duration::from_secs(30 * 24 * 3600));
        config.validate().unwrap();
    }

    #[test]
    fn short_dedupe_window_names_the_setting() {
        let config = parse(&["--dedupe-window", "6d"]).unwrap();
        let error = config.validate().unwrap_err();
        assert!(
            error.to_string().contains("NUDGE_CP_DEDUPE_WINDOW"),
            "{error}"
        );
    }

    #[test]
    fn device_limit_is_bounded_and_named() {
        assert_eq!(parse(&[]).unwrap().max_devices_per_user, 20);
        parse(&["--max-devices-per-user", "1"])
            .unwrap()
            .validate()
            .unwrap();
        for bad in ["0", "1001"] {
            let error = parse(&["--max-devices-per-user", bad])
                .unwrap()
                .validate()
                .unwrap_err();
            assert_eq!(error.setting, "NUDGE_CP_MAX_DEVICES_PER_USER", "{error}");
        }
        let error = parse(&["--max-devices-per-user=-3"]).unwrap_err();
        assert!(
            error.to_string().contains("NUDGE_CP_MAX_DEVICES_PER_USER"),
            "{error}"
        );
    }

    #[test]
    fn user_token_rules_are_bounded_and_reach_the_verifier() {
        let defaults = parse(&[]).unwrap();
        assert_eq!(
            defaults.user_token_max_lifetime.as_secs(),
            crate::http::user_auth::DEFAULT_MAX_LIFETIME_SECONDS as u64
        );
        for (args, setting) in [
            (
                &["--user-token-max-lifetime", "30s"][..],
                "NUDGE_CP_USER_TOKEN_MAX_LIFETIME",
            ),
            (
                &["--user-token-max-lifetime", "400d"][..],
                "NUDGE_CP_USER_TOKEN_MAX_LIFETIME",
            ),
            (
                &["--user-token-audience", " "][..],
                "NUDGE_CP_USER_TOKEN_AUDIENCE",
            ),
            (
                &["--user-token-issuer", ""][..],
                "NUDGE_CP_USER_TOKEN_ISSUER",
            ),
        ] {
            let error = parse(args).unwrap().validate().unwrap_err();
            assert_eq!(error.setting, setting, "{args:?}: {error}");
        }
        let config = parse(&[
            "--user-token-secret",
            "an-application-secret-of-32-bytes!!",
            "--user-token-audience",
            "nudge",
            "--user-token-max-lifetime",
            "1h",
        ])
        .unwrap();
        config.validate().unwrap();
        let tokens = config.user_tokens().unwrap();
        let now = jiff::Timestamp::now().as_second();
        let token =
            tokens.sign(&serde_json::json!({"sub": "u", "exp": now + 7200, "aud": "nudge"}));
        assert!(
            tokens.verify(&token, now).is_err(),
            "2 h is over the 1 h set"
        );
        let token = tokens.sign(&serde_json::json!({"sub": "u", "exp": now + 600}));
        assert!(tokens.verify(&token, now).is_err(), "aud is required");
        assert!(parse(&[]).unwrap().user_tokens().is_none());
    }

    #[test]
    fn parse_error_names_the_setting() {
        let error = parse(&["--grpc-listen", "not-an-address"]).unwrap_err();
        assert!(
            error.to_string().contains("NUDGE_CP_GRPC_LISTEN"),
            "{error}"
        );
    }

    #[test]
    fn clashing_listeners_are_refused() {
        let config = parse(&[
            "--http-listen",
            "127.0.0.1:9000",
            "--admin-listen",
            "127.0.0.1:9000",
        ])
        .unwrap();
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("NUDGE_CP_HTTP_LISTEN")
        );
    }

    #[test]
    fn stream_caps_are_checked_by_name() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.stream_limits(), crate::http::StreamLimits::default());
        let error = parse(&["--live-max-streams-per-user", "0"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("NUDGE_CP_LIVE_MAX_STREAMS_PER_USER"),
            "{error}"
        );
        let error = parse(&[
            "--live-max-streams",
            "3",
            "--live-max-streams-per-user",
            "4",
        ])
        .unwrap()
        .validate()
        .unwrap_err();
        assert!(
            error.to_string().contains("NUDGE_CP_LIVE_MAX_STREAMS:"),
            "{error}"
        );
    }

    #[test]
    fn engine_config_is_optional() {
        assert_eq!(parse(&[]).unwrap().engine_config, None);
        let config = parse(&["--config", "/etc/nudge/nudge.toml"]).unwrap();
        assert_eq!(
            config.engine_config,
            Some(PathBuf::from("/etc/nudge/nudge.toml"))
        );
        config.validate().unwrap();
        let error = parse(&["--config", ""]).unwrap_err();
        assert!(error.to_string().contains("NUDGE_CP_CONFIG"), "{error}");
        let config = Config {
            engine_config: Some(PathBuf::new()),
            ..parse(&[]).unwrap()
        };
        let error = config.validate().unwrap_err();
        assert!(error.to_string().contains("NUDGE_CP_CONFIG"), "{error}");
    }

    #[test]
    fn partial_tls_settings_are_refused_by_name() {
        let refused = |args: &[&str]| parse(args).unwrap().validate().unwrap_err().setting;
        assert_eq!(refused(&["--tls-cert", "c.pem"]), "NUDGE_CP_TLS_KEY");
        assert_eq!(refused(&["--tls-key", "k.pem"]), "NUDGE_CP_TLS_CERT");
        assert_eq!(
            refused(&["--tls-client-ca", "ca.pem"]),
            "NUDGE_CP_TLS_CLIENT_CA"
        );
        assert_eq!(
            refused(&[
                "--tls-cert",
                "c.pem",
                "--tls-key",
                "k.pem",
                "--tls-reload-interval",
                "0s"
            ]),
            "NUDGE_CP_TLS_RELOAD_INTERVAL"
        );
        let mutual = parse(&[
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-client-ca",
            "ca.pem",
        ])
        .unwrap();
        mutual.validate().unwrap();
        assert_eq!(mutual.tls.tls_reload_interval, Duration::from_secs(5));
    }

    #[test]
    fn dev_certs_is_a_subcommand() {
        let config =
            parse(&["dev-certs", "--out", "certs", "--server-name", "cp.example"]).unwrap();
        let Some(Command::DevCerts(args)) = config.command else {
            panic!("no subcommand: {config:?}");
        };
        assert_eq!(args.out, PathBuf::from("certs"));
        assert_eq!(args.server_names, ["cp.example"]);
        assert_eq!(args.agent_name, "nudge-agent");
        assert!(parse(&[]).unwrap().command.is_none());
    }

    #[test]
    fn ingest_is_authenticated_unless_loopback_or_opted_out() {
        let refused = |args: &[&str]| parse(args).unwrap().validate().unwrap_err();
        let open = ["--grpc-listen", "0.0.0.0:50051"];
        let error = refused(&open);
        assert_eq!(error.setting, "NUDGE_CP_GRPC_LISTEN");
        for named in [
            "NUDGE_CP_AGENT_TOKENS",
            "NUDGE_CP_TLS_CLIENT_CA",
            "NUDGE_CP_GRPC_INSECURE_ALLOW_UNAUTHENTICATED",
        ] {
            assert!(error.message.contains(named), "{error}");
        }
        let token = ["--agent-tokens", "a-token-of-enough-bytes"];
        parse(&[open[0], open[1], token[0], token[1]])
            .unwrap()
            .validate()
            .unwrap();
        let opted_out = [
            open[0],
            open[1],
            "--grpc-insecure-allow-unauthenticated",
            "true",
        ];
        parse(&opted_out).unwrap().validate().unwrap();
        let mtls = [
            open[0],
            open[1],
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-client-ca",
            "ca.pem",
        ];
        parse(&mtls).unwrap().validate().unwrap();
        let both = [&opted_out[..], &token[..]].concat();
        assert_eq!(
            refused(&both).setting,
            "NUDGE_CP_GRPC_INSECURE_ALLOW_UNAUTHENTICATED",
            "an opt-out next to tokens is a mistake"
        );
        for weak in [
            "short",
            "a-token-of-enough-bytes,",
            "has spaces but is long",
        ] {
            assert_eq!(
                refused(&["--agent-tokens", weak]).setting,
                "NUDGE_CP_AGENT_TOKENS",
                "{weak}"
            );
        }
        let rotated = parse(&[
            "--agent-tokens",
            "old-token-0123456789,new-token-0123456789",
        ])
        .unwrap();
        rotated.validate().unwrap();
        assert_eq!(rotated.agent_tokens.len(), 2);
        assert!(!format!("{rotated:?}").contains("0123456789"));
        // Loopback needs nothing: the README's first command.
        let defaults = parse(&[]).unwrap();
        assert_eq!(defaults.grpc_listen.to_string(), "127.0.0.1:50051");
        assert!(defaults.agent_tokens.is_empty());
    }

    #[test]
    fn admin_token_is_redacted() {
        let config = parse(&["--admin-token", "s3cret"]).unwrap();
        assert!(!format!("{config:?}").contains("s3cret"));
    }
}
