//! Turns the URLs of NUDGE_AGENT_CONTROL_PLANE into the replica set: every
//! address each host resolves to is one replica (a Kubernetes headless
//! Service names every ready pod), resolved again every
//! NUDGE_AGENT_RESOLVE_INTERVAL and at once when pushes find no replica
//! that answers.
//!
//! Promises: a host that fails to resolve keeps its last known addresses
//! (a DNS hiccup never empties the set); an IP literal is used as is; an
//! address reached through two URLs is one replica (the first URL's host
//! names it). Each replica's connection keeps the URL's host as
//! `:authority` and TLS server name (see [`super::GrpcTransport::new`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::GrpcTransport;
use super::target::ControlPlaneUrl;
use super::tls::AgentTls;
use crate::config::Config;
use crate::shipper::replicas::Replicas;

/// How long one host's lookup may take before its last addresses are kept.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Fewest time between two resolutions asked for by failing pushes.
const MIN_GAP: Duration = Duration::from_secs(1);

pub struct Resolver {
    urls: Vec<ControlPlaneUrl>,
    /// With TLS: each URL's connection material and the name its replicas'
    /// certificates must carry.
    tls: Option<(Arc<AgentTls>, HashMap<ControlPlaneUrl, ServerNameOf>)>,
    /// The agent token every replica's pushes carry.
    token: Option<Arc<super::token::ControlPlaneToken>>,
    timeout: Duration,
    interval: Duration,
    replicas: Replicas<GrpcTransport>,
    /// Each URL's addresses from its last successful lookup.
    last: HashMap<ControlPlaneUrl, Vec<SocketAddr>>,
}

type ServerNameOf = nudge_tls::rustls::pki_types::ServerName<'static>;

impl Resolver {
    /// A resolver feeding `replicas` from `config`'s URLs (validated, so
    /// every https:// URL has a server name).
    pub fn new(
        config: &Config,
        tls: Option<Arc<AgentTls>>,
        token: Option<Arc<super::token::ControlPlaneToken>>,
        replicas: Replicas<GrpcTransport>,
    ) -> Self {
        let tls = tls.map(|tls| {
            let names = config
                .control_plane
                .iter()
                .filter_map(|url| Some((url.clone(), config.tls_server_name(url)?)))
                .collect();
            (tls, names)
        });
        Self {
            urls: config.control_plane.clone(),
            tls,
            token,
            timeout: config.ship_timeout,
            interval: config.resolve_interval,
            replicas,
            last: HashMap::new(),
        }
    }

    /// Resolves every URL once and updates the replica set.
    pub async fn refresh(&mut self) {
        let mut wanted: Vec<(String, ControlPlaneUrl, SocketAddr)> = Vec::new();
        for url in &self.urls {
            let addresses = match lookup(url).await {
                Ok(addresses) if !addresses.is_empty() => {
                    self.last.insert(url.clone(), addresses.clone());
                    addresses
                }
                outcome => {
                    let error = match outcome {
                        Err(error) => error,
                        Ok(_) => "no addresses".into(),
                    };
                    let kept = self.last.get(url).cloned().unwrap_or_default();
                    tracing::warn!(control_plane = %url, %error, kept = kept.len(), "cannot resolve the control plane; keeping its last addresses");
                    kept
                }
            };
            for address in addresses {
                let key = address.to_string();
                if !wanted.iter().any(|(known, ..)| *known == key) {
                    wanted.push((key, url.clone(), address));
                }
            }
        }
        let keys: Vec<String> = wanted.iter().map(|(key, ..)| key.clone()).collect();
        self.replicas.update(&keys, |key| {
            let (_, url, address) = wanted.iter().find(|(known, ..)| known == key)?;
            let tls = match &self.tls {
                Some((tls, names)) => Some((tls.as_ref(), names.get(url)?.clone())),
                None => None,
            };
            GrpcTransport::new(url, *address, tls, self.token.clone(), self.timeout)
                .inspect_err(|error| tracing::error!(control_plane = %url, %address, %error, "cannot set up a channel to the replica"))
                .ok()
        });
    }

    /// Refreshes every `interval`, or (at most once per [`MIN_GAP`]) when
    /// pushes find no replica that answers, until `stop`. The first
    /// refresh is the caller's (start-up does one before shipping).
    pub async fn run(mut self, stop: CancellationToken) {
        loop {
            let refreshed = Instant::now();
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                () = async {
                    self.replicas.starved().await;
                    tokio::time::sleep_until(refreshed + MIN_GAP).await;
                } => {}
                () = stop.cancelled() => return,
            }
            tokio::select! {
                () = self.refresh() => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

/// `url`'s addresses: itself for an IP literal, else a DNS lookup.
async fn lookup(url: &ControlPlaneUrl) -> Result<Vec<SocketAddr>, String> {
    if let Some(ip) = url.ip() {
        return Ok(vec![SocketAddr::new(ip, url.port)]);
    }
    let found = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host(url.host_port()))
        .await
        .map_err(|_| format!("no answer within {LOOKUP_TIMEOUT:?}"))?
        .map_err(|error| error.to_string())?;
    let mut addresses: Vec<SocketAddr> = found.collect();
    addresses.sort();
    addresses.dedup();
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ip_literals_are_used_as_is_and_names_are_looked_up() {
        let ip = ControlPlaneUrl::parse("http://10.1.2.3:50051").unwrap();
        assert_eq!(
            lookup(&ip).await.unwrap(),
            ["10.1.2.3:50051".parse().unwrap()]
        );
        let name = ControlPlaneUrl::parse("http://localhost:50051").unwrap();
        let found = lookup(&name).await.unwrap();
        assert!(!found.is_empty());
        assert!(
            found
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 50051)
        );
    }

    #[tokio::test]
    async fn urls_become_replicas_once_each() {
        let config = <Config as clap::Parser>::try_parse_from([
            "nudge-agent",
            "--control-plane",
            "http://127.0.0.1:1,http://127.0.0.2:1,http://[::1]:1",
        ])
        .unwrap();
        let replicas = Replicas::new(
            Duration::from_millis(1),
            Duration::from_millis(1),
            &prometheus::Registry::new(),
        );
        let mut resolver = Resolver::new(&config, None, None, replicas.clone());
        resolver.refresh().await;
        assert_eq!(
            replicas.endpoints(),
            ["127.0.0.1:1", "127.0.0.2:1", "[::1]:1"]
        );
    }
}
