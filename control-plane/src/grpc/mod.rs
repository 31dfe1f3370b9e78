//! The control plane's gRPC server: `nudge.v1.Ingest` for agents,
//! `nudge.v1.Management` and `nudge.v1.Analytics` for operators (behind the
//! admin token, see `manage` and `analytics`), the standard health service
//! and reflection (so `grpcurl` works without .proto files).
//!
//! Health reports `nudge.v1.Ingest` (and the whole server, `""`) SERVING
//! while the server runs and NOT_SERVING as soon as shutdown starts; the
//! server then stops accepting and lets in-flight calls finish.
//! `nudge.v1.Management` and `nudge.v1.Analytics` are SERVING likewise when
//! an admin token is configured, and NOT_SERVING without one (every call
//! would be refused).
//! Errors become `tonic::Status` in one place: `impl From<ServiceError> for
//! Status` in `error.rs`.
//!
//! With `NUDGE_CP_TLS_CERT`/`_KEY` the listener speaks TLS only, and with
//! `NUDGE_CP_TLS_CLIENT_CA` it requires client certificates (mTLS); see
//! `tls`. Who may push to Ingest (certificates, agent tokens, or nobody
//! checked on a loopback-only listener) is `agent_auth`.

pub mod agent_auth;
mod analytics;
pub(crate) mod convert;
mod error;
mod ingest;
mod manage;
pub mod request_metrics;
pub mod tls;
mod warn_throttle;

use nudge_proto::v1::ingest_server::IngestServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

pub use analytics::{ANALYTICS_SERVICE_NAME, AnalyticsService};
pub use convert::{event_from_envelope, events_from_envelopes, push_response};
pub use error::ServiceError;
pub use ingest::IngestService;
pub use manage::{MANAGEMENT_SERVICE_NAME, ManagementService};

use crate::config::AdminToken;
use crate::metrics::Metrics;
use crate::storage::EventStore;

/// Largest Push accepted: agents batch up to thousands of events, and
/// tonic's 4 MiB default would turn a big batch into a retry loop.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The fully-qualified name health reports for the Ingest service.
pub const INGEST_SERVICE_NAME: &str = "nudge.v1.Ingest";

/// The stores and settings the gRPC services work with, all shared with
/// the rest of the control plane.
#[derive(Clone)]
pub struct GrpcState {
    pub store: EventStore,
    pub metrics: Metrics,
    /// Types and rules, file and API.
    pub catalog: crate::catalog::Catalog,
    pub notifications: crate::notifications::NotificationStore,
    pub queue: crate::delivery::DeliveryQueue,
    pub preferences: crate::preferences::PreferenceStore,
    pub devices: crate::devices::DeviceStore,
    /// `None` disables the management and analytics APIs.
    pub admin_token: Option<AdminToken>,
    /// The analytics rollups, for `nudge.v1.Analytics`.
    pub analytics: crate::analytics::Analytics,
    /// Who may push to `nudge.v1.Ingest`.
    pub ingest_auth: agent_auth::IngestAuth,
    /// Topic subscriptions and broadcasts (`manage::broadcasts`).
    pub topics: crate::storage::TopicTable,
    pub broadcasts: crate::storage::BroadcastTable,
}

/// Serves gRPC on `listener` (over TLS when `tls` is given) until
/// `shutdown` is cancelled, then drains.
pub async fn serve(
    listener: TcpListener,
    state: GrpcState,
    tls: Option<tls::GrpcTls>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status(INGEST_SERVICE_NAME, ServingStatus::Serving)
        .await;
    health_reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let management_status = if state.admin_token.is_some() {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    health_reporter
        .set_service_status(MANAGEMENT_SERVICE_NAME, management_status)
        .await;
    health_reporter
        .set_service_status(ANALYTICS_SERVICE_NAME, management_status)
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

    let ingest = tonic::service::interceptor::InterceptedService::new(
        IngestServer::new(IngestService::new(
            state.store.clone(),
            state.metrics.clone(),
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES),
        state.ingest_auth.interceptor(),
    );
    let registry = state.metrics.registry().clone();
    if let Err(error) = state.ingest_auth.announce(&registry) {
        tracing::error!(%error, "cannot register nudge_cp_grpc_unauthenticated_ingest");
    }
    let request_metrics =
        request_metrics::GrpcMetricsLayer::new(state.metrics.grpc_request_duration.clone());
    let analytics = analytics::server(&state);
    let management = manage::server(state);

    match &tls {
        None => tracing::info!("grpc listener in plain text (no NUDGE_CP_TLS_CERT)"),
        Some(tls) if tls.mutual() => {
            tracing::info!("grpc listener with TLS; client certificates required")
        }
        Some(_) => tracing::warn!(
            "grpc listener with TLS but no NUDGE_CP_TLS_CLIENT_CA: agents are not authenticated"
        ),
    }
    let incoming_shutdown = shutdown.clone();
    let signal = async move {
        shutdown.cancelled().await;
        tracing::info!("grpc server draining");
        for service in [
            INGEST_SERVICE_NAME,
            MANAGEMENT_SERVICE_NAME,
            ANALYTICS_SERVICE_NAME,
        ] {
            health_reporter
                .set_service_status(service, ServingStatus::NotServing)
                .await;
        }
        health_reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
    };
    let router = tonic::transport::Server::builder()
        .layer(request_metrics)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ingest)
        .add_service(management)
        .add_service(analytics);
    match tls {
        None => {
            router
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), signal)
                .await
        }
        Some(tls) => {
            let incoming = tls.incoming(listener, &registry, incoming_shutdown);
            router.serve_with_incoming_shutdown(incoming, signal).await
        }
    }
}
