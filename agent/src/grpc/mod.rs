//! The gRPC side of the shipper: `Ingest.Push` over tonic.
//!
//! This is the one place where outbox records become protobuf requests and
//! `tonic::Status` becomes the shipper's [`ShipError`]: which codes are worth
//! retrying is decided here, once. [`target`] is one configured URL,
//! [`resolve`] turns the URLs into replica addresses, each served by one
//! [`GrpcTransport`] (which `crate::shipper::replicas` spreads pushes over),
//! [`tls`] dials `https://` control planes, and [`token`] is the agent token
//! every push carries.

pub mod resolve;
pub mod target;
pub mod tls;
pub mod token;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use nudge_tls::rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use prost::Message;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use nudge_proto::v1::ingest_client::IngestClient;
use nudge_proto::v1::{Envelope, PushRequest};

use crate::outbox::Record;
use crate::shipper::{PushOutcome, ShipError, Transport};
use target::ControlPlaneUrl;

/// Ships batches to one control-plane replica (one resolved address of one
/// configured URL) over a lazily connected channel, so the agent starts
/// (and buffers) while the control plane is unreachable.
#[derive(Clone)]
pub struct GrpcTransport {
    client: IngestClient<Channel>,
    timeout: Duration,
    /// Sent as `authorization` on every push, when configured.
    token: Option<Arc<token::ControlPlaneToken>>,
}

impl GrpcTransport {
    /// Connects to `address` on behalf of `url`: the requests' `:authority`
    /// and, with `tls`, the certificate's expected name are `url`'s host
    /// (or `server_name`), never the address.
    pub fn new(
        url: &ControlPlaneUrl,
        address: SocketAddr,
        tls: Option<(&tls::AgentTls, ServerName<'static>)>,
        token: Option<Arc<token::ControlPlaneToken>>,
        timeout: Duration,
    ) -> Result<Self, tonic::transport::Error> {
        let endpoint = Endpoint::from_shared(url.origin())?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        // Our own connectors dial the resolved address; tonic's would
        // resolve the name again and could pick another replica.
        let channel = match tls {
            Some((tls, server_name)) => {
                let dialer = tls.connector(address, server_name);
                endpoint.connect_with_connector_lazy(tower::service_fn(
                    move |_: tonic::transport::Uri| dialer.clone().dial(),
                ))
            }
            None => endpoint.connect_with_connector_lazy(tower::service_fn(
                move |_: tonic::transport::Uri| async move {
                    let tcp = TcpStream::connect(address).await?;
                    tcp.set_nodelay(true)?;
                    Ok::<_, std::io::Error>(TokioIo::new(tcp))
                },
            )),
        };
        let client = IngestClient::new(channel)
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(16 << 20);
        Ok(Self {
            client,
            timeout,
            token,
        })
    }
}

impl Transport for GrpcTransport {
    async fn push(&self, agent_id: &str, records: &[Record]) -> Result<PushOutcome, ShipError> {
        let mut outcome = PushOutcome::default();
        let mut envelopes = Vec::with_capacity(records.len());
        let mut seq_of_id = std::collections::HashMap::with_capacity(records.len());
        for record in records {
            match Envelope::decode(record.bytes.as_ref()) {
                Ok(envelope) => {
                    seq_of_id.insert(envelope.id.clone(), record.seq);
                    envelopes.push(envelope);
                }
                Err(error) => outcome
                    .undecodable
                    .push((record.seq, format!("undecodable envelope: {error}"))),
            }
        }
        if envelopes.is_empty() {
            return Ok(outcome);
        }
        let mut request = tonic::Request::new(PushRequest {
            agent_id: agent_id.to_owned(),
            batch_id: uuid::Uuid::now_v7().to_string(),
            sent_at: Some(nudge_proto::timestamp(SystemTime::now())),
            envelopes,
        });
        request.set_timeout(self.timeout);
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.header());
        }
        let response = match self.client.clone().push(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                let error = classify(&status);
                if let (ShipError::Unauthenticated { .. }, Some(token)) = (&error, &self.token) {
                    // A rotated Secret may hold the token that works now.
                    token.refused();
                }
                return Err(error);
            }
        };
        for rejected in response.rejected {
            let seq = seq_of_id.get(&rejected.envelope_id).copied().unwrap_or(0);
            outcome.refused.push((seq, rejected.reason));
        }
        outcome.accepted = (response.stored + response.duplicates) as usize;
        Ok(outcome)
    }
}

/// Which failures are the batch's fault. Everything else — the control
/// plane being down, overloaded, slow, or refusing this agent's credentials —
/// is retried, because dropping events for it would be a silent loss; a
/// refused credential is told apart so it can be reported loudly.
fn classify(status: &tonic::Status) -> ShipError {
    let message = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::InvalidArgument | Code::OutOfRange => ShipError::BatchRefused { message },
        Code::Unauthenticated | Code::PermissionDenied => ShipError::Unauthenticated { message },
        _ => ShipError::Retriable {
            retry_after: retry_hint(status),
            message,
        },
    }
}

/// The control plane's `retry-after-ms` metadata, if it sent one.
fn retry_hint(status: &tonic::Status) -> Option<Duration> {
    let millis: u64 = status
        .metadata()
        .get("retry-after-ms")?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_invalid_batches_are_permanent_failures() {
        assert!(matches!(
            classify(&tonic::Status::invalid_argument("bad")),
            ShipError::BatchRefused { .. }
        ));
        for status in [
            tonic::Status::unavailable("down"),
            tonic::Status::deadline_exceeded("slow"),
            tonic::Status::internal("oops"),
        ] {
            assert!(matches!(classify(&status), ShipError::Retriable { .. }));
        }
        // Kept in the outbox like a retriable failure, but reported apart.
        for status in [
            tonic::Status::unauthenticated("no token"),
            tonic::Status::permission_denied("not you"),
        ] {
            assert!(matches!(
                classify(&status),
                ShipError::Unauthenticated { .. }
            ));
        }
    }

    #[test]
    fn the_retry_hint_is_read_from_metadata() {
        let mut status = tonic::Status::resource_exhausted("busy");
        status
            .metadata_mut()
            .insert("retry-after-ms", "1500".parse().unwrap());
        match classify(&status) {
            ShipError::Retriable { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_millis(1500)));
            }
            other => panic!("expected retriable, got {other:?}"),
        }
    }
}
