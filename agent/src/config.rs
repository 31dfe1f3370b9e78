//! The agent's settings: every one has a flag, an environment variable
//! (`NUDGE_AGENT_…`) and a default. The names are a contract shared with the
//! Helm chart and the README.
//!
//! Each flag's value name is its environment variable, so a bad value is
//! reported by the name an operator actually set
//! (`invalid value 'x' for '--listen <NUDGE_AGENT_LISTEN>'`), and start-up
//! stops with exit code 64 (EX_USAGE).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::grpc::target::ControlPlaneUrl;
use crate::outbox::{Durability, OutboxConfig};
use crate::shipper::ShipperConfig;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "nudge-agent",
    version,
    about = "Nudge sidecar: Segment-compatible intake, durable outbox, gRPC shipping"
)]
pub struct Config {
    /// Where applications call the agent (Segment tracking API). Keep it on
    /// loopback: without NUDGE_AGENT_SERVER_KEYS, every caller that sends no
    /// Origin header is trusted.
    #[arg(
        long,
        env = "NUDGE_AGENT_LISTEN",
        value_name = "NUDGE_AGENT_LISTEN",
        default_value = "127.0.0.1:7070"
    )]
    pub listen: SocketAddr,

    /// Admin listener: /metrics, /healthz, /readyz.
    #[arg(
        long,
        env = "NUDGE_AGENT_ADMIN_LISTEN",
        value_name = "NUDGE_AGENT_ADMIN_LISTEN",
        default_value = "0.0.0.0:7071"
    )]
    pub admin_listen: SocketAddr,

    /// Directory of the durable outbox (sled segments and quarantine).
    #[arg(
        long,
        env = "NUDGE_AGENT_DATA_DIR",
        value_name = "NUDGE_AGENT_DATA_DIR",
        default_value = "./data/agent"
    )]
    pub data_dir: PathBuf,

    /// The control plane's gRPC address: http://host:port, or
    /// https://host:port for TLS (see NUDGE_AGENT_TLS_*). Several replicas:
    /// a comma-separated list (all http:// or all https://), and/or a host
    /// name that resolves to several addresses (a headless Service); the
    /// agent spreads batches over them and fails over (`grpc::replicas`).
    #[arg(long, env = "NUDGE_AGENT_CONTROL_PLANE", value_name = "NUDGE_AGENT_CONTROL_PLANE", default_value = "http://127.0.0.1:50051", value_delimiter = ',', value_parser = ControlPlaneUrl::parse)]
    pub control_plane: Vec<ControlPlaneUrl>,

    /// The agent token sent to the control plane on every push, as
    /// `authorization: Bearer <token>` (one of the control plane's
    /// NUDGE_CP_AGENT_TOKENS). Prefer NUDGE_AGENT_CONTROL_PLANE_TOKEN_FILE.
    #[arg(
        long,
        env = "NUDGE_AGENT_CONTROL_PLANE_TOKEN",
        value_name = "NUDGE_AGENT_CONTROL_PLANE_TOKEN",
        hide_env_values = true
    )]
    pub control_plane_token: Option<SecretString>,

    /// A file holding the agent token (e.g. a mounted Kubernetes Secret);
    /// read at start, and again whenever the control plane refuses the
    /// token, so a rotated Secret is used without a restart.
    #[arg(
        long,
        env = "NUDGE_AGENT_CONTROL_PLANE_TOKEN_FILE",
        value_name = "NUDGE_AGENT_CONTROL_PLANE_TOKEN_FILE"
    )]
    pub control_plane_token_file: Option<PathBuf>,

    /// How often the host names of NUDGE_AGENT_CONTROL_PLANE are resolved
    /// again, so replicas that appear or disappear are used or dropped.
    #[arg(long, env = "NUDGE_AGENT_RESOLVE_INTERVAL", value_name = "NUDGE_AGENT_RESOLVE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub resolve_interval: Duration,

    /// With https://: PEM bundle of the CAs the control plane's certificate
    /// must chain to. Unset: the webpki roots (the public CAs Mozilla
    /// trusts). Re-read when the file changes.
    #[arg(long, env = "NUDGE_AGENT_TLS_CA", value_name = "NUDGE_AGENT_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// With https://: PEM client certificate chain presented to the control
    /// plane (mTLS). Re-read when the file changes.
    #[arg(
        long,
        env = "NUDGE_AGENT_TLS_CERT",
        value_name = "NUDGE_AGENT_TLS_CERT"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of NUDGE_AGENT_TLS_CERT. Re-read when the file changes.
    #[arg(long, env = "NUDGE_AGENT_TLS_KEY", value_name = "NUDGE_AGENT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// The name the control plane's certificate must carry, when it is not
    /// the host of NUDGE_AGENT_CONTROL_PLANE (e.g. connecting by IP).
    #[arg(
        long,
        env = "NUDGE_AGENT_TLS_SERVER_NAME",
        value_name = "NUDGE_AGENT_TLS_SERVER_NAME"
    )]
    pub tls_server_name: Option<String>,

    /// How often the TLS files are checked for changes.
    #[arg(long, env = "NUDGE_AGENT_TLS_RELOAD_INTERVAL", value_name = "NUDGE_AGENT_TLS_RELOAD_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub tls_reload_interval: Duration,

    /// Quota on the bytes of events waiting in the outbox; when full, intake
    /// answers 503 with Retry-After. Accepts KiB/MiB/GiB suffixes.
    #[arg(long, env = "NUDGE_AGENT_MAX_OUTBOX_BYTES", value_name = "NUDGE_AGENT_MAX_OUTBOX_BYTES", default_value = "1GiB", value_parser = parse_bytes)]
    pub max_outbox_bytes: u64,

    /// This agent's identity in batches sent to the control plane. Defaults
    /// to the host name (the pod name on Kubernetes).
    #[arg(long, env = "NUDGE_AGENT_ID", value_name = "NUDGE_AGENT_ID")]
    pub agent_id: Option<String>,

    /// Comma-separated write keys accepted at intake. Empty: any key (or none).
    #[arg(
        long,
        env = "NUDGE_AGENT_WRITE_KEYS",
        value_name = "NUDGE_AGENT_WRITE_KEYS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub write_keys: Vec<String>,

    /// Comma-separated secret server keys: a call carrying one (HTTP Basic
    /// user name or `writeKey`) is trusted to notify and to set contact
    /// traits (email, phone). Unset: calls without an Origin header (not
    /// from a browser) are trusted instead. Never put one in a browser.
    #[arg(
        long,
        env = "NUDGE_AGENT_SERVER_KEYS",
        value_name = "NUDGE_AGENT_SERVER_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub server_keys: Vec<String>,

    /// Comma-separated origins of the web pages that may call the public
    /// intake routes (`https://shop.example`), or `*` for any page. Empty: no
    /// page (every request with an Origin header is refused). /v1/notify
    /// never answers browsers.
    #[arg(long, env = "NUDGE_AGENT_CORS_ORIGINS", value_name = "NUDGE_AGENT_CORS_ORIGINS", value_delimiter = ',', default_value = "*", value_parser = crate::http::cors::parse_origin)]
    pub cors_origins: Vec<String>,

    /// `fsync`: answer only once the call is on disk (group commit).
    /// `unsafe-ack-before-flush`: answer before the flush; a crash can lose
    /// the last ~500 ms of acknowledged calls.
    #[arg(
        long,
        env = "NUDGE_AGENT_DURABILITY",
        value_name = "NUDGE_AGENT_DURABILITY",
        default_value = "fsync"
    )]
    pub durability: DurabilityArg,

    /// Bytes an outbox segment takes before a new one is started; drained
    /// segments are deleted whole, which is how disk space is given back.
    /// Unset: a quarter of NUDGE_AGENT_MAX_OUTBOX_BYTES, at most 2MiB (see
    /// [`Config::segment_bytes`]), so that setting the quota alone is enough.
    #[arg(long, env = "NUDGE_AGENT_SEGMENT_BYTES", value_name = "NUDGE_AGENT_SEGMENT_BYTES", value_parser = parse_bytes)]
    pub segment_bytes: Option<u64>,

    /// sled page cache per open segment.
    #[arg(long, env = "NUDGE_AGENT_CACHE_BYTES", value_name = "NUDGE_AGENT_CACHE_BYTES", default_value = "16MiB", value_parser = parse_bytes)]
    pub cache_bytes: u64,

    /// Most events in one batch to the control plane.
    #[arg(long, env = "NUDGE_AGENT_BATCH_MAX_EVENTS", value_name = "NUDGE_AGENT_BATCH_MAX_EVENTS", default_value = "500", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_max_events: u32,

    /// Most encoded bytes in one batch (a single larger event is still sent alone).
    #[arg(long, env = "NUDGE_AGENT_BATCH_MAX_BYTES", value_name = "NUDGE_AGENT_BATCH_MAX_BYTES", default_value = "1MiB", value_parser = parse_bytes)]
    pub batch_max_bytes: u64,

    /// Batches in flight to the control plane at once.
    #[arg(long, env = "NUDGE_AGENT_SHIP_CONCURRENCY", value_name = "NUDGE_AGENT_SHIP_CONCURRENCY", default_value = "4", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub ship_concurrency: u32,

    /// How long a partial batch waits for more events before it is sent.
    #[arg(long, env = "NUDGE_AGENT_BATCH_LINGER", value_name = "NUDGE_AGENT_BATCH_LINGER", default_value = "20ms", value_parser = humantime::parse_duration)]
    pub batch_linger: Duration,

    /// First retry delay after a failed shipment (then doubling, full jitter).
    #[arg(long, env = "NUDGE_AGENT_RETRY_INITIAL", value_name = "NUDGE_AGENT_RETRY_INITIAL", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub retry_initial: Duration,

    /// Longest retry delay.
    #[arg(long, env = "NUDGE_AGENT_RETRY_MAX", value_name = "NUDGE_AGENT_RETRY_MAX", default_value = "30s", value_parser = humantime::parse_duration)]
    pub retry_max: Duration,

    /// Deadline of one Ingest.Push call.
    #[arg(long, env = "NUDGE_AGENT_SHIP_TIMEOUT", value_name = "NUDGE_AGENT_SHIP_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub ship_timeout: Duration,

    /// On SIGTERM: how long to keep shipping before exiting; what is left
    /// stays on disk for the next start.
    #[arg(long, env = "NUDGE_AGENT_SHUTDOWN_GRACE", value_name = "NUDGE_AGENT_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Retry-After given to clients when the outbox quota is full.
    #[arg(long, env = "NUDGE_AGENT_RETRY_AFTER", value_name = "NUDGE_AGENT_RETRY_AFTER", default_value = "5s", value_parser = humantime::parse_duration)]
    pub retry_after: Duration,

    /// Log format on stderr: `text` or `json`.
    #[arg(
        long,
        env = "NUDGE_AGENT_LOG_FORMAT",
        value_name = "NUDGE_AGENT_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// A setting whose value must never be shown (`Debug` is redacted;
/// parsing never fails, so clap cannot echo it in an error).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for SecretString {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(SecretString(s.to_owned()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    Fsync,
    UnsafeAckBeforeFlush,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A setting that parses but does not make sense with the others.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct InvalidSetting {
    pub setting: &'static str,
    pub problem: String,
}

impl Config {
    /// Checks what single values cannot: relations between settings.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let invalid = |setting, problem: String| Err(InvalidSetting { setting, problem });
        if self.max_outbox_bytes < 1 << 20 {
            return invalid(
                "NUDGE_AGENT_MAX_OUTBOX_BYTES",
                "must be at least 1MiB".into(),
            );
        }
        // Only a segment size the operator chose can contradict the quota;
        // the derived one fits any valid quota by construction.
        if let Some(segment_bytes) = self.segment_bytes
            && (segment_bytes < MIN_SEGMENT_BYTES || segment_bytes > self.max_outbox_bytes)
        {
            return invalid(
                "NUDGE_AGENT_SEGMENT_BYTES",
                format!(
                    "is {segment_bytes} bytes; it must be at least 64KiB and at most \
                         NUDGE_AGENT_MAX_OUTBOX_BYTES ({} bytes), or unset to follow the quota",
                    self.max_outbox_bytes
                ),
            );
        }
        if self.batch_max_bytes > 8 << 20 {
            return invalid(
                "NUDGE_AGENT_BATCH_MAX_BYTES",
                "must be at most 8MiB (the control plane's message limit is 16MiB)".into(),
            );
        }
        if self.retry_initial.is_zero() || self.retry_initial > self.retry_max {
            return invalid(
                "NUDGE_AGENT_RETRY_INITIAL",
                "must be above zero and at most NUDGE_AGENT_RETRY_MAX".into(),
            );
        }
        if self.ship_timeout.is_zero() {
            return invalid("NUDGE_AGENT_SHIP_TIMEOUT", "must be above zero".into());
        }
        if self.write_keys.iter().any(|k| k.trim() != k) {
            return invalid(
                "NUDGE_AGENT_WRITE_KEYS",
                "write keys must not have surrounding spaces".into(),
            );
        }
        self.validate_browser_settings()?;
        if self.resolve_interval.is_zero() {
            return invalid("NUDGE_AGENT_RESOLVE_INTERVAL", "must be above zero".into());
        }
        self.validate_control_planes()?;
        self.validate_token()?;
        self.validate_tls()
    }

    /// One source of the token at most; its content is checked when it is
    /// loaded (`grpc::token`), which reads the file.
    fn validate_token(&self) -> Result<(), InvalidSetting> {
        if self.control_plane_token.is_some() && self.control_plane_token_file.is_some() {
            return Err(InvalidSetting {
                setting: "NUDGE_AGENT_CONTROL_PLANE_TOKEN_FILE",
                problem: "and NUDGE_AGENT_CONTROL_PLANE_TOKEN are both set; keep one".into(),
            });
        }
        if self
            .control_plane_token_file
            .as_ref()
            .is_some_and(|path| path.as_os_str().is_empty())
        {
            return Err(InvalidSetting {
                setting: "NUDGE_AGENT_CONTROL_PLANE_TOKEN_FILE",
                problem: "is set but empty; unset it or name the token's file".into(),
            });
        }
        Ok(())
    }

    /// Server keys are secrets that may not be mistaken for public keys, and
    /// the origin list means one thing.
    fn validate_browser_settings(&self) -> Result<(), InvalidSetting> {
        let invalid = |setting, problem: String| Err(InvalidSetting { setting, problem });
        for key in self.server_keys.iter().filter(|key| !key.is_empty()) {
            // Nothing here echoes the key: error messages end up in logs.
            if key.trim() != key || key.contains(':') {
                return invalid(
                    "NUDGE_AGENT_SERVER_KEYS",
                    "a server key must not have surrounding spaces or a `:` (HTTP Basic \
                     ends the user name at the first `:`)"
                        .into(),
                );
            }
            if key.chars().count() < MIN_SERVER_KEY_CHARS {
                return invalid(
                    "NUDGE_AGENT_SERVER_KEYS",
                    format!(
                        "a server key is shorter than {MIN_SERVER_KEY_CHARS} characters; \
                         generate one, e.g. `openssl rand -hex 32`"
                    ),
                );
            }
            if self.write_keys.contains(key) {
                return invalid(
                    "NUDGE_AGENT_SERVER_KEYS",
                    "a server key is also in NUDGE_AGENT_WRITE_KEYS; write keys are public \
                     (they ship in browser code), so a server key must differ from all of them"
                        .into(),
                );
            }
        }
        if self.cors_origins.len() > 1 && self.cors_origins.iter().any(|origin| origin == "*") {
            return invalid(
                "NUDGE_AGENT_CORS_ORIGINS",
                "`*` allows every origin; give it alone or list origins without it".into(),
            );
        }
        Ok(())
    }

    /// The agent token, if one is configured: read (the file) and checked
    /// now, so a bad one stops start-up.
    pub fn control_plane_token(
        &self,
    ) -> Result<Option<crate::grpc::token::ControlPlaneToken>, crate::grpc::token::TokenError> {
        use crate::grpc::token::ControlPlaneToken;
        match (&self.control_plane_token, &self.control_plane_token_file) {
            (Some(value), _) => ControlPlaneToken::from_value(value.expose().trim()).map(Some),
            (None, Some(path)) => ControlPlaneToken::from_file(path.clone()).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// A token would travel in plain text to another host: http:// to an
    /// address that is not loopback.
    pub fn token_in_plain_text(&self) -> bool {
        let has_token =
            self.control_plane_token.is_some() || self.control_plane_token_file.is_some();
        has_token
            && !self.uses_tls()
            && self.control_plane.iter().any(|url| {
                url.ip()
                    .map_or(!url.host.eq_ignore_ascii_case("localhost"), |ip| {
                        !ip.is_loopback()
                    })
            })
    }

    /// The list names each replica once and speaks one protocol: the TLS
    /// settings apply to every entry, so a mixed list would send some
    /// batches in plain text.
    fn validate_control_planes(&self) -> Result<(), InvalidSetting> {
        let invalid = |problem: String| {
            Err(InvalidSetting {
                setting: "NUDGE_AGENT_CONTROL_PLANE",
                problem,
            })
        };
        let Some(first) = self.control_plane.first() else {
            return invalid("is empty; name at least one http://host:port".into());
        };
        if let Some(other) = self.control_plane.iter().find(|url| url.tls != first.tls) {
            return invalid(format!(
                "mixes http:// and https:// ({first} and {other}); use one scheme for every replica"
            ));
        }
        for (n, url) in self.control_plane.iter().enumerate() {
            if self.control_plane[..n].contains(url) {
                return invalid(format!("names {url} twice"));
            }
        }
        Ok(())
    }

    /// TLS settings make one whole, and only with an https:// address (a
    /// certificate configured for a plain-text connection would be a
    /// silent downgrade).
    fn validate_tls(&self) -> Result<(), InvalidSetting> {
        let invalid = |setting, problem: &str| {
            Err(InvalidSetting {
                setting,
                problem: problem.to_owned(),
            })
        };
        let paths = [
            ("NUDGE_AGENT_TLS_CA", &self.tls_ca),
            ("NUDGE_AGENT_TLS_CERT", &self.tls_cert),
            ("NUDGE_AGENT_TLS_KEY", &self.tls_key),
        ];
        for (setting, path) in paths {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return invalid(setting, "is set but empty; unset it or name a PEM file");
            }
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return invalid(
                    "NUDGE_AGENT_TLS_KEY",
                    "is required with NUDGE_AGENT_TLS_CERT",
                );
            }
            (None, Some(_)) => {
                return invalid(
                    "NUDGE_AGENT_TLS_CERT",
                    "is required with NUDGE_AGENT_TLS_KEY",
                );
            }
            _ => {}
        }
        let any_tls =
            self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_server_name.is_some();
        if any_tls && !self.uses_tls() {
            return invalid(
                "NUDGE_AGENT_CONTROL_PLANE",
                "is http:// but NUDGE_AGENT_TLS_* settings are given; use https://",
            );
        }
        if let Some(name) = &self.tls_server_name
            && rustls_server_name(name).is_none()
        {
            return invalid(
                "NUDGE_AGENT_TLS_SERVER_NAME",
                "is neither a DNS name nor an IP address",
            );
        }
        if self.uses_tls()
            && self
                .control_plane
                .iter()
                .any(|url| self.tls_server_name(url).is_none())
        {
            return invalid(
                "NUDGE_AGENT_CONTROL_PLANE",
                "a host is not a valid TLS server name; set NUDGE_AGENT_TLS_SERVER_NAME",
            );
        }
        if self.tls_reload_interval.is_zero() {
            return invalid("NUDGE_AGENT_TLS_RELOAD_INTERVAL", "must be above zero");
        }
        Ok(())
    }

    /// Whether the control plane is reached over TLS (https:// addresses;
    /// validation makes every entry agree).
    pub fn uses_tls(&self) -> bool {
        self.control_plane.first().is_some_and(|url| url.tls)
    }

    /// The name `url`'s certificate is checked against:
    /// NUDGE_AGENT_TLS_SERVER_NAME, else the URL's host (also when the
    /// connection goes to an address the host resolved to).
    pub fn tls_server_name(
        &self,
        url: &ControlPlaneUrl,
    ) -> Option<nudge_tls::rustls::pki_types::ServerName<'static>> {
        match &self.tls_server_name {
            Some(name) => rustls_server_name(name),
            None => url.server_name(),
        }
    }

    /// The segment size in effect: NUDGE_AGENT_SEGMENT_BYTES if set, else
    /// a quarter of the quota between 64KiB and 2MiB. A quarter keeps
    /// several segments within the quota, so drained ones are deleted (and
    /// their disk space returned) while the rest still waits. The cap bounds
    /// the agent's memory: sled 0.34 keeps what the active segment took in
    /// memory until the segment is closed (its page cache hardly evicts
    /// written pages), so with 64MiB segments a burst of batches peaked
    /// near 190MiB of RSS, with 8MiB near 65–80MiB and with 2MiB near
    /// 55–60MiB, at the same throughput (README, agent benchmark). Below
    /// 2MiB a burst of batches rotates dozens of databases a second.
    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes.unwrap_or_else(|| {
            (self.max_outbox_bytes / 4).clamp(MIN_SEGMENT_BYTES, DEFAULT_MAX_SEGMENT_BYTES)
        })
    }

    pub fn outbox(&self) -> OutboxConfig {
        let mut outbox = OutboxConfig::new(&self.data_dir);
        outbox.max_bytes = self.max_outbox_bytes;
        outbox.segment_max_bytes = self.segment_bytes();
        outbox.cache_capacity = self.cache_bytes;
        outbox.retry_after = self.retry_after;
        outbox.durability = match self.durability {
            DurabilityArg::Fsync => Durability::Fsync,
            DurabilityArg::UnsafeAckBeforeFlush => Durability::UnsafeAckBeforeFlush,
        };
        outbox
    }

    pub fn shipper(&self) -> ShipperConfig {
        ShipperConfig {
            agent_id: self.agent_id.clone().unwrap_or_else(default_agent_id),
            in_flight: self.ship_concurrency as usize,
            max_events: self.batch_max_events as usize,
            max_bytes: self.batch_max_bytes as usize,
            linger: self.batch_linger,
            retry_initial: self.retry_initial,
            retry_max: self.retry_max,
            timeout: self.ship_timeout,
        }
    }

    /// Server keys (see `http::trust`); empty means none configured.
    pub fn server_keys(&self) -> crate::http::ServerKeys {
        crate::http::ServerKeys::new(self.server_keys.clone())
    }

    /// The pages allowed to call the public intake routes.
    pub fn allowed_origins(&self) -> crate::http::AllowedOrigins {
        crate::http::AllowedOrigins::from_entries(&self.cors_origins)
    }

    /// Write keys accepted at intake; empty means any.
    pub fn accepted_write_keys(&self) -> Vec<String> {
        self.write_keys
            .iter()
            .filter(|k| !k.is_empty())
            .cloned()
            .collect()
    }
}

/// Shortest server key accepted: a secret short enough to guess would make
/// the trust rule a formality.
const MIN_SERVER_KEY_CHARS: usize = 16;

/// Smallest segment accepted: below it sled's fixed costs per database
/// (files, a flush thread) outweigh the data.
const MIN_SEGMENT_BYTES: u64 = 64 << 10;
/// The largest segment size chosen when none is set.
const DEFAULT_MAX_SEGMENT_BYTES: u64 = 2 << 20;

/// The host name (a pod's name on Kubernetes), else a fixed placeholder.
fn default_agent_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "nudge-agent".to_owned())
}

fn rustls_server_name(name: &str) -> Option<nudge_tls::rustls::pki_types::ServerName<'static>> {
    nudge_tls::rustls::pki_types::ServerName::try_from(name.to_owned()).ok()
}

/// Parses a byte size: a plain number or one with a KiB/MiB/GiB (or KB/MB/GB,
/// also binary) suffix.
pub fn parse_bytes(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{value}' is not a byte size such as 512MiB"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit '{other}' (use KiB, MiB or GiB)")),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("'{value}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_with_and_without_units() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("2 GiB"), Ok(2 << 30));
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("").is_err());
    }

    #[test]
    fn defaults_are_valid() {
        let config = Config::try_parse_from(["nudge-agent"]).unwrap();
        config.validate().unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:7070");
    }

    #[test]
    fn a_bad_value_names_the_environment_variable() {
        let error = Config::try_parse_from(["nudge-agent", "--listen", "nowhere"]).unwrap_err();
        assert!(error.to_string().contains("NUDGE_AGENT_LISTEN"), "{error}");
        let error =
            Config::try_parse_from(["nudge-agent", "--control-plane", "ftp://x"]).unwrap_err();
        assert!(
            error.to_string().contains("NUDGE_AGENT_CONTROL_PLANE"),
            "{error}"
        );
    }

    #[test]
    fn https_and_tls_settings() {
        let parse = |args: &[&str]| {
            Config::try_parse_from(std::iter::once("nudge-agent").chain(args.iter().copied()))
                .unwrap()
        };
        let refused = |args: &[&str]| parse(args).validate().unwrap_err().setting;

        let config = parse(&["--control-plane", "https://cp.example:50051"]);
        config.validate().unwrap();
        assert!(config.uses_tls());
        let first = |config: &Config| config.control_plane[0].clone();
        assert_eq!(
            config.tls_server_name(&first(&config)).unwrap().to_str(),
            "cp.example"
        );
        let by_ip = parse(&[
            "--control-plane",
            "https://10.0.0.7:50051",
            "--tls-server-name",
            "nudge-control-plane.nudge.svc",
        ]);
        by_ip.validate().unwrap();
        assert_eq!(
            by_ip.tls_server_name(&first(&by_ip)).unwrap().to_str(),
            "nudge-control-plane.nudge.svc"
        );
        let ipv6 = parse(&["--control-plane", "https://[::1]:50051"]);
        assert_eq!(ipv6.tls_server_name(&first(&ipv6)).unwrap().to_str(), "::1");

        assert_eq!(
            refused(&["--tls-ca", "ca.pem"]),
            "NUDGE_AGENT_CONTROL_PLANE",
            "TLS files with http:// are a downgrade"
        );
        let https = ["--control-plane", "https://cp:1"];
        assert_eq!(
            refused(&[https[0], https[1], "--tls-cert", "c.pem"]),
            "NUDGE_AGENT_TLS_KEY"
        );
        assert_eq!(
            refused(&[https[0], https[1], "--tls-key", "k.pem"]),
            "NUDGE_AGENT_TLS_CERT"
        );
        assert_eq!(
            refused(&[https[0], https[1], "--tls-server-name", "not a name"]),
            "NUDGE_AGENT_TLS_SERVER_NAME"
        );
        let error = Config::try_parse_from(["nudge-agent", "--control-plane", "https://cp/path"])
            .unwrap_err();
        assert!(
            error.to_string().contains("NUDGE_AGENT_CONTROL_PLANE"),
            "{error}"
        );
    }

    /// Issue 13: several replicas in one variable, one scheme for all.
    #[test]
    fn a_comma_separated_list_names_every_replica() {
        let parse = |value: &str| {
            Config::try_parse_from(["nudge-agent", "--control-plane", value])
                .map_err(|e| e.to_string())
                .and_then(|config| {
                    config.validate().map_err(|e| e.to_string())?;
                    Ok(config.control_plane)
                })
        };
        let one = parse("http://cp:50051").unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].to_string(), "http://cp:50051");
        let two = parse("http://10.0.0.1:50051, http://10.0.0.2:50051").unwrap();
        let shown: Vec<String> = two.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["http://10.0.0.1:50051", "http://10.0.0.2:50051"]);
        let tls = parse("https://a.example:1,https://b.example:2").unwrap();
        assert!(tls.iter().all(|url| url.tls));

        for (bad, says) in [
            ("http://a:1,https://b:1", "mixes http:// and https://"),
            ("http://a:1,http://a:1", "twice"),
            ("http://a:1,,http://b:1", "empty entry"),
            ("http://a:1,", "empty entry"),
            ("http://a:1,ftp://b:1", "expected http://host:port"),
            ("http://a:1,b:1", "expected http://host:port"),
        ] {
            let error = parse(bad).unwrap_err();
            assert!(
                error.contains("NUDGE_AGENT_CONTROL_PLANE") && error.contains(says),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn every_https_entry_needs_a_server_name() {
        let config = Config::try_parse_from([
            "nudge-agent",
            "--control-plane",
            "https://cp-0.example:1,https://cp-1.example:1",
        ])
        .unwrap();
        config.validate().unwrap();
        let names: Vec<String> = config
            .control_plane
            .iter()
            .map(|url| config.tls_server_name(url).unwrap().to_str().into_owned())
            .collect();
        assert_eq!(names, ["cp-0.example", "cp-1.example"], "each its own host");
        let zero = Config::try_parse_from(["nudge-agent", "--resolve-interval", "0s"]).unwrap();
        assert_eq!(
            zero.validate().unwrap_err().setting,
            "NUDGE_AGENT_RESOLVE_INTERVAL"
        );
    }

    /// Issue 14: a small quota alone starts; the segment follows it.
    #[test]
    fn the_segment_size_follows_the_quota_unless_set() {
        let parse = |args: &[&str]| {
            let config =
                Config::try_parse_from(std::iter::once("nudge-agent").chain(args.iter().copied()))
                    .unwrap();
            config
                .validate()
                .map(|()| config.outbox().segment_max_bytes)
        };
        assert_eq!(parse(&[]).unwrap(), 2 << 20, "1GiB quota: 2MiB cap");
        assert_eq!(parse(&["--max-outbox-bytes", "4MiB"]).unwrap(), 1 << 20);
        assert_eq!(parse(&["--max-outbox-bytes", "1MiB"]).unwrap(), 256 << 10);
        assert_eq!(parse(&["--max-outbox-bytes", "16MiB"]).unwrap(), 2 << 20);
        assert_eq!(parse(&["--max-outbox-bytes", "128MiB"]).unwrap(), 2 << 20);
        assert_eq!(
            parse(&["--max-outbox-bytes", "4MiB", "--segment-bytes", "4MiB"]).unwrap(),
            4 << 20,
            "an explicit size wins"
        );
        let error = parse(&["--max-outbox-bytes", "4MiB", "--segment-bytes", "8MiB"]).unwrap_err();
        assert_eq!(error.setting, "NUDGE_AGENT_SEGMENT_BYTES");
        assert!(error.problem.contains("or unset"), "{error}");
    }

    /// Issue 15: server keys and the origin list.
    #[test]
    fn browser_settings() {
        let parse = |args: &[&str]| {
            Config::try_parse_from(std::iter::once("nudge-agent").chain(args.iter().copied()))
        };
        let refused = |args: &[&str]| parse(args).unwrap().validate().unwrap_err();
        let server = "0123456789abcdef0123";

        let defaults = parse(&[]).unwrap();
        assert!(defaults.server_keys().is_empty());
        assert_eq!(defaults.allowed_origins(), crate::http::AllowedOrigins::Any);

        let config = parse(&[
            "--server-keys",
            server,
            "--cors-origins",
            "https://Shop.example, http://localhost:3000",
        ])
        .unwrap();
        config.validate().unwrap();
        assert!(config.server_keys().contains(server));
        assert_eq!(
            config.allowed_origins(),
            crate::http::AllowedOrigins::Only(vec![
                "https://shop.example".into(),
                "http://localhost:3000".into()
            ])
        );
        let none = parse(&["--cors-origins", ""]).unwrap();
        assert_eq!(
            none.allowed_origins(),
            crate::http::AllowedOrigins::Only(vec![])
        );

        let short = refused(&["--server-keys", "short"]);
        assert_eq!(short.setting, "NUDGE_AGENT_SERVER_KEYS");
        assert!(!short.to_string().contains("short\""), "{short}");
        let shared = refused(&["--server-keys", server, "--write-keys", server]);
        assert!(
            shared.problem.contains("NUDGE_AGENT_WRITE_KEYS"),
            "{shared}"
        );
        assert!(
            !shared.to_string().contains(server),
            "the key is not echoed"
        );
        let colon = refused(&["--server-keys", "0123456789:abcdef0123"]);
        assert_eq!(colon.setting, "NUDGE_AGENT_SERVER_KEYS");
        let mixed = refused(&["--cors-origins", "*,https://shop.example"]);
        assert_eq!(mixed.setting, "NUDGE_AGENT_CORS_ORIGINS");
        let error = parse(&["--cors-origins", "https://shop.example/"]).unwrap_err();
        assert!(
            error.to_string().contains("NUDGE_AGENT_CORS_ORIGINS"),
            "{error}"
        );
    }

    #[test]
    fn inconsistent_settings_are_refused_by_name() {
        let config = Config::try_parse_from(["nudge-agent", "--segment-bytes", "2GiB"]).unwrap();
        let error = config.validate().unwrap_err();
        assert_eq!(error.setting, "NUDGE_AGENT_SEGMENT_BYTES");
    }
}
