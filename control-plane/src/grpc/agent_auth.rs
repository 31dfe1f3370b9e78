//! Who may call `nudge.v1.Ingest/Push`: agents holding a client certificate
//! the listener verified (mTLS, `NUDGE_CP_TLS_CLIENT_CA`), or one of the
//! agent tokens of `NUDGE_CP_AGENT_TOKENS`, or, where neither is set,
//! anyone who can reach a loopback-only listener or a listener whose
//! operator opted out with `NUDGE_CP_GRPC_INSECURE_ALLOW_UNAUTHENTICATED`.
//!
//! # Promises
//!
//! * **Tokens, when configured, are always required**: every Push must
//!   carry the metadata `authorization: Bearer <token>` with one of the
//!   configured tokens, also on an mTLS listener (both layers configured
//!   means both enforced). Missing or wrong → UNAUTHENTICATED, checked by
//!   [`AuthorizeAgent`] before the handler runs, so nothing is stored.
//! * **Constant time**: a presented token is compared with every
//!   configured token, none stopping at the first differing byte, so
//!   neither timing nor the position of a token in the list leaks.
//! * **Several tokens** are accepted at once, so a token is rotated
//!   without refusing anyone: add the new one, move agents to it, remove
//!   the old one.
//! * **No silent open port**: [`IngestAuth::from_config`] is only reached
//!   after `Config::validate` refused a non-loopback listener without any
//!   authentication and without the opt-out; the mode is logged at start
//!   (a WARN when unauthenticated by opt-out) and exported as
//!   `nudge_cp_grpc_unauthenticated_ingest` (1: anyone reaching the port
//!   may push).
//!
//! Health and reflection stay open (probes and tooling); Management and
//! Analytics have their own admin-token check (`manage`).

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use prometheus::{IntGauge, Registry};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use super::ServiceError;
use super::warn_throttle::{WARN_INTERVAL, WarnThrottle};
use crate::config::{AdminToken, Config};

/// The shortest agent token accepted: a token is the only secret standing
/// between the network and the event store.
pub const MIN_AGENT_TOKEN_BYTES: usize = 16;

/// One accepted agent token. `Debug` is redacted and parsing never fails
/// (a clap error would echo the value); `Config::validate` checks it.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentToken(AdminToken);

impl AgentToken {
    /// `NUDGE_CP_AGENT_TOKENS=""` parses as one empty token.
    pub fn is_empty(&self) -> bool {
        self.0.as_bytes().is_empty()
    }

    /// Why this token cannot be used, if it cannot: too short, or holding
    /// characters an HTTP/2 header value cannot carry verbatim.
    pub fn problem(&self) -> Option<String> {
        let bytes = self.0.as_bytes();
        if bytes.is_empty() {
            return Some("has an empty entry (check for a stray comma)".to_owned());
        }
        if !bytes.iter().all(u8::is_ascii_graphic) {
            return Some(
                "has a token with spaces or non-ASCII characters; use visible ASCII only \
                 (e.g. openssl rand -hex 32)"
                    .to_owned(),
            );
        }
        if bytes.len() < MIN_AGENT_TOKEN_BYTES {
            return Some(format!(
                "has a token of {} characters; use at least {MIN_AGENT_TOKEN_BYTES} \
                 (e.g. openssl rand -hex 32)",
                bytes.len()
            ));
        }
        None
    }
}

impl fmt::Debug for AgentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AgentToken(<redacted>)")
    }
}

impl std::str::FromStr for AgentToken {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(AgentToken(AdminToken::from(s.trim())))
    }
}

/// How Ingest is protected, decided once at start from the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestAuthMode {
    /// Client certificates (mTLS) and tokens, both required.
    CertificatesAndTokens,
    /// Client certificates (mTLS): the TLS handshake refuses agents
    /// without one.
    Certificates,
    /// Agent tokens.
    Tokens,
    /// Nothing, on a listener only this host can reach.
    LoopbackOnly,
    /// Nothing, because the operator said so
    /// (`NUDGE_CP_GRPC_INSECURE_ALLOW_UNAUTHENTICATED`).
    InsecureOptOut,
}

impl IngestAuthMode {
    /// Whether anyone reaching the port may push.
    pub fn unauthenticated(self) -> bool {
        matches!(self, Self::LoopbackOnly | Self::InsecureOptOut)
    }
}

/// Ingest's authentication: the mode and the accepted tokens.
#[derive(Clone)]
pub struct IngestAuth {
    mode: IngestAuthMode,
    /// Empty: no token is asked for.
    tokens: Arc<[AgentToken]>,
}

impl IngestAuth {
    /// The policy of validated settings (`Config::validate` passed).
    pub fn from_config(config: &Config) -> Self {
        let certificates = config.tls.tls_client_ca.is_some();
        let tokens: Arc<[AgentToken]> = config.agent_tokens.clone().into();
        let mode = match (certificates, !tokens.is_empty()) {
            (true, true) => IngestAuthMode::CertificatesAndTokens,
            (true, false) => IngestAuthMode::Certificates,
            (false, true) => IngestAuthMode::Tokens,
            (false, false) if config.grpc_insecure_allow_unauthenticated => {
                IngestAuthMode::InsecureOptOut
            }
            (false, false) => IngestAuthMode::LoopbackOnly,
        };
        IngestAuth { mode, tokens }
    }

    pub fn mode(&self) -> IngestAuthMode {
        self.mode
    }

    /// Says at start how Ingest is protected (a WARN when it is not by the
    /// operator's choice) and exports the gauge.
    pub fn announce(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        let gauge = IntGauge::new(
            "nudge_cp_grpc_unauthenticated_ingest",
            "1 when nudge.v1.Ingest accepts pushes without a client certificate or agent token (a loopback-only listener, or NUDGE_CP_GRPC_INSECURE_ALLOW_UNAUTHENTICATED); 0 when agents must authenticate.",
        )?;
        registry.register(Box::new(gauge.clone()))?;
        gauge.set(i64::from(self.mode.unauthenticated()));
        let tokens = self.tokens.len();
        match self.mode {
            IngestAuthMode::CertificatesAndTokens => tracing::info!(
                tokens,
                "grpc ingest: agents need a client certificate and an agent token"
            ),
            IngestAuthMode::Certificates => {
                tracing::info!("grpc ingest: agents need a client certificate (mTLS)")
            }
            IngestAuthMode::Tokens => tracing::info!(
                tokens,
                "grpc ingest: agents need an agent token (NUDGE_CP_AGENT_TOKENS)"
            ),
            IngestAuthMode::LoopbackOnly => tracing::info!(
                "grpc ingest: no authentication; the listener is loopback-only, so only this host can push (set NUDGE_CP_AGENT_TOKENS or NUDGE_CP_TLS_CLIENT_CA before listening on other interfaces)"
            ),
            IngestAuthMode::InsecureOptOut => tracing::warn!(
                "INSECURE: grpc ingest accepts pushes from anyone who reaches the port (NUDGE_CP_GRPC_INSECURE_ALLOW_UNAUTHENTICATED=true); for local development only: set NUDGE_CP_AGENT_TOKENS or NUDGE_CP_TLS_CLIENT_CA"
            ),
        }
        Ok(())
    }

    /// The check in front of the Ingest service.
    pub fn interceptor(&self) -> AuthorizeAgent {
        AuthorizeAgent {
            tokens: Arc::clone(&self.tokens),
        }
    }
}

/// Lets a Push through only with an accepted agent token, when tokens are
/// configured.
#[derive(Clone)]
pub struct AuthorizeAgent {
    tokens: Arc<[AgentToken]>,
}

impl Interceptor for AuthorizeAgent {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if self.tokens.is_empty() {
            return Ok(request);
        }
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        match check_token(&self.tokens, header) {
            Ok(()) => Ok(request),
            Err(error) => {
                // Loud on purpose: an agent refused here keeps its events in
                // its outbox until someone fixes its token. But anyone who
                // reaches the port can be refused at will: one line a
                // minute, with how many were left out.
                static REFUSED: WarnThrottle = WarnThrottle::new(WARN_INTERVAL);
                if let Some(left_out) = REFUSED.admit(Instant::now()) {
                    tracing::warn!(
                        peer = ?request.remote_addr(),
                        %error,
                        refusals_not_logged = left_out,
                        "grpc ingest refused an agent"
                    );
                }
                Err(error.into())
            }
        }
    }
}

fn check_token(tokens: &[AgentToken], header: Option<&str>) -> Result<(), ServiceError> {
    let Some(presented) = header.and_then(|value| value.strip_prefix("Bearer ")) else {
        return Err(ServiceError::Unauthenticated(
            "missing metadata `authorization: Bearer <agent token>`: this control plane requires one of NUDGE_CP_AGENT_TOKENS (agents send NUDGE_AGENT_CONTROL_PLANE_TOKEN)",
        ));
    };
    let presented = presented.trim().as_bytes();
    // Every token is compared, whatever matched before: no early exit.
    let accepted = tokens.iter().fold(false, |accepted, token| {
        accepted | token.0.matches(presented)
    });
    if accepted {
        Ok(())
    } else {
        Err(ServiceError::Unauthenticated(
            "the agent token is not one of NUDGE_CP_AGENT_TOKENS",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(values: &[&str]) -> Vec<AgentToken> {
        values.iter().map(|v| v.parse().unwrap()).collect()
    }

    #[test]
    fn any_configured_token_passes_and_nothing_else() {
        let accepted = tokens(&["old-token-0123456789", "new-token-0123456789"]);
        for good in ["old-token-0123456789", "new-token-0123456789"] {
            check_token(&accepted, Some(&format!("Bearer {good}"))).unwrap();
        }
        for bad in [
            None,
            Some("old-token-0123456789"),
            Some("Bearer "),
            Some("Bearer old-token-012345678"),
            Some("Bearer old-token-01234567890"),
            Some("Basic old-token-0123456789"),
        ] {
            let error = check_token(&accepted, bad).unwrap_err();
            assert!(
                matches!(error, ServiceError::Unauthenticated(_)),
                "{bad:?}: {error}"
            );
        }
    }

    #[test]
    fn weak_or_malformed_tokens_are_named() {
        assert!(tokens(&["0123456789abcdef"])[0].problem().is_none());
        for bad in ["", "short", "has a space in it!!", "ünïcödé-0123456789"] {
            assert!(tokens(&[bad])[0].problem().is_some(), "{bad:?}");
        }
        assert!(!format!("{:?}", tokens(&["secret-secret-secret"])).contains("secret"));
    }
}
