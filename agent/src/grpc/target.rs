//! One entry of NUDGE_AGENT_CONTROL_PLANE: `http://host:port` or
//! `https://host:port`, parsed once at start-up.
//!
//! Promises: a [`ControlPlaneUrl`] has a scheme of `http` or `https`, a
//! host, and a port (80 or 443 when the URL has none), and no path. The
//! host is kept as written, because it is what the control plane is asked
//! for: it stays the `:authority` of every request and, with TLS, the name
//! its certificate is checked against, even when the connection goes to an
//! address the name resolved to.

use std::fmt;
use std::net::IpAddr;

use nudge_tls::rustls::pki_types::ServerName;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ControlPlaneUrl {
    /// `https://`: every connection to this control plane speaks TLS.
    pub tls: bool,
    /// The host as written, without the brackets of an IPv6 literal.
    pub host: String,
    pub port: u16,
}

impl ControlPlaneUrl {
    /// Parses one entry; the error says what is expected (clap adds the
    /// variable's name).
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value.is_empty() {
            return Err(
                "an empty entry; expected http://host:port or https://host:port, \
                 several separated by commas"
                    .into(),
            );
        }
        let uri: axum::http::Uri = value.parse().map_err(|e| {
            format!("'{value}' is not a URI ({e}); expected http://host:port or https://host:port")
        })?;
        let path_free = uri.path_and_query().is_none_or(|p| p.as_str() == "/");
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(format!(
                    "'{value}': expected http://host:port or https://host:port"
                ));
            }
        };
        let (Some(authority), true) = (uri.authority(), path_free) else {
            return Err(format!(
                "'{value}': expected http://host:port or https://host:port (no path)"
            ));
        };
        if authority.as_str().contains('@') {
            return Err(format!("'{value}': user information is not supported"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(format!("'{value}': no host"));
        }
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Self { tls, host, port })
    }

    /// The host when it is an IP address (nothing to resolve).
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// `host:port` as the resolver wants it (brackets around IPv6).
    pub fn host_port(&self) -> String {
        match self.ip() {
            Some(IpAddr::V6(_)) => format!("[{}]:{}", self.host, self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }

    /// What tonic is given: always `http://` (with TLS our connector does
    /// the handshake, see `grpc::tls`), and the configured host, so that
    /// the `:authority` of every request names it.
    pub fn origin(&self) -> String {
        format!("http://{}", self.host_port())
    }

    /// The host as a TLS server name, if it is a valid one.
    pub fn server_name(&self) -> Option<ServerName<'static>> {
        ServerName::try_from(self.host.clone()).ok()
    }
}

impl fmt::Display for ControlPlaneUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.host_port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_with_default_ports_and_kept_hosts() {
        let url = ControlPlaneUrl::parse(" http://cp.nudge.svc:50051/ ").unwrap();
        assert_eq!(
            url,
            ControlPlaneUrl {
                tls: false,
                host: "cp.nudge.svc".into(),
                port: 50051
            }
        );
        assert_eq!(url.origin(), "http://cp.nudge.svc:50051");
        assert_eq!(url.to_string(), "http://cp.nudge.svc:50051");
        assert_eq!(ControlPlaneUrl::parse("https://cp").unwrap().port, 443);
        assert_eq!(ControlPlaneUrl::parse("http://cp").unwrap().port, 80);
        let v6 = ControlPlaneUrl::parse("https://[::1]:7").unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.host_port(), "[::1]:7");
        assert!(v6.ip().is_some());
        assert_eq!(v6.server_name().unwrap().to_str(), "::1");
    }

    #[test]
    fn bad_entries_are_refused_with_what_is_expected() {
        for bad in [
            "",
            "  ",
            "ftp://cp:1",
            "cp:50051",
            "http://cp:1/path",
            "http://user@cp:1",
            "not a url",
        ] {
            let error = ControlPlaneUrl::parse(bad).unwrap_err();
            assert!(
                error.contains("expected") || error.contains("not supported"),
                "{bad:?}: {error}"
            );
        }
    }
}
