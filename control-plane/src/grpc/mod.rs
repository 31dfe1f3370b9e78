//! The gRPC server agents talk to: `nudge.v1.Ingest`, the standard health
//! service and reflection (so `grpcurl` works without .proto files).
//!
//! Health reports `nudge.v1.Ingest` (and the whole server, `""`) SERVING
//! while the server runs and NOT_SERVING as soon as shutdown starts; the
//! server then stops accepting and lets in-flight Push calls finish.
//! Errors become `tonic::Status` in one place: `impl From<ServiceError> for
//! Status` below.

mod convert;
mod ingest;

use std::sync::Arc;
use std::time::Duration;

use nudge_proto::v1::ingest_server::IngestServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::metadata::MetadataValue;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

pub use convert::{event_from_envelope, events_from_envelopes, push_response};
pub use ingest::IngestService;

use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Largest Push accepted: agents batch up to thousands of events, and
/// tonic's 4 MiB default would turn a big batch into a retry loop.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// How long an agent should wait before retrying after a store failure.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The fully-qualified name health reports for the Ingest service.
pub const INGEST_SERVICE_NAME: &str = "nudge.v1.Ingest";

/// Why a gRPC call failed; mapped to a status code in `From` below.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The store could not take the batch; retriable.
    #[error("store unavailable: {0}")]
    Store(#[from] StoreError),
    /// The blocking store task died (panic or runtime shutdown); retriable.
    #[error("store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Status {
        match error {
            // Nothing of the batch was acknowledged, so the agent keeps it and
            // retries; the hint keeps a fleet of agents from hammering a
            // struggling store.
            ServiceError::Store(_) | ServiceError::Task(_) => {
                let mut status = Status::unavailable(error.to_string());
                status.metadata_mut().insert(
                    "retry-after-ms",
                    MetadataValue::from(RETRY_AFTER.as_millis() as u64),
                );
                status
            }
        }
    }
}

/// Serves gRPC on `listener` until `shutdown` is cancelled, then drains.
pub async fn serve(
    listener: TcpListener,
    store: Arc<dyn Store>,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status(INGEST_SERVICE_NAME, ServingStatus::Serving)
        .await;
    health_reporter
        .set_service_status("", ServingStatus::Serving)
        .await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(nudge_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor sets are valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(nudge_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the embedded descriptor sets are valid");

    let ingest = IngestServer::new(IngestService::new(store, metrics))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);

    let signal = async move {
        shutdown.cancelled().await;
        tracing::info!("grpc server draining");
        health_reporter
            .set_service_status(INGEST_SERVICE_NAME, ServingStatus::NotServing)
            .await;
        health_reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
    };
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ingest)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), signal)
        .await
}
