//! `nudge_cp_grpc_request_duration_seconds{service,method,code}`: a tower
//! layer on the tonic server that times every call.
//!
//! Labels stay bounded: `service` and `method` come from the request path
//! (`/nudge.v1.Ingest/Push` → `nudge.v1.Ingest`, `Push`) but only when the
//! server's descriptor sets declare them; any other service is `unknown`
//! for both, and an undeclared method of a known service is method
//! `unknown`. `code` is the canonical name of the call's `grpc-status`
//! (`OK`, `INVALID_ARGUMENT`, …), read from the response headers when the
//! call failed before answering (a trailers-only response) or else from
//! the trailers at the end of the response body; `none` when the body
//! ended or was dropped (the client went away) without any status.
//!
//! The time measured is the time to the response head: for unary calls
//! that is the whole handler, since tonic answers once it has the reply;
//! for streaming calls (health `Watch`, reflection) it is the start of the
//! stream, not its life. The observation itself waits for the status.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use prometheus::{HistogramOpts, HistogramVec};
use prost::Message;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tower::{Layer, Service};

/// The metric's name.
pub const NAME: &str = "nudge_cp_grpc_request_duration_seconds";
/// `service` and `method` of calls to what the server does not declare.
pub const UNKNOWN: &str = "unknown";
/// `code` of calls that ended without any `grpc-status`.
pub const NO_STATUS: &str = "none";

/// The histogram, not yet registered.
pub fn histogram() -> Result<HistogramVec, prometheus::Error> {
    HistogramVec::new(
        HistogramOpts::new(
            NAME,
            "Time to answer a gRPC call, to the response head (streaming calls: to the \
             stream start), by service, method and status code.",
        )
        .buckets(vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]),
        &["service", "method", "code"],
    )
}

/// The layer for `Server::builder().layer(…)`.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    histogram: HistogramVec,
    known: Arc<KnownMethods>,
}

impl GrpcMetricsLayer {
    /// Times calls into `histogram`, naming the services and methods the
    /// control plane serves (its own, health and reflection).
    pub fn new(histogram: HistogramVec) -> Self {
        let known = KnownMethods::from_descriptor_sets(&[
            nudge_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ]);
        GrpcMetricsLayer {
            histogram,
            known: Arc::new(known),
        }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics {
            inner,
            histogram: self.histogram.clone(),
            known: Arc::clone(&self.known),
        }
    }
}

/// Fully-qualified service name → its method names.
struct KnownMethods(HashMap<String, HashSet<String>>);

impl KnownMethods {
    fn from_descriptor_sets(sets: &[&[u8]]) -> Self {
        let mut services: HashMap<String, HashSet<String>> = HashMap::new();
        for set in sets {
            let set = prost_types::FileDescriptorSet::decode(*set)
                .expect("the embedded descriptor sets are valid");
            for file in set.file {
                for service in &file.service {
                    let name = match file.package() {
                        "" => service.name().to_owned(),
                        package => format!("{package}.{}", service.name()),
                    };
                    services
                        .entry(name)
                        .or_default()
                        .extend(service.method.iter().map(|m| m.name().to_owned()));
                }
            }
        }
        KnownMethods(services)
    }

    /// `(service, method)` labels of a request path.
    fn labels<'a>(&self, path: &'a str) -> (&'a str, &'a str) {
        let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
            return (UNKNOWN, UNKNOWN);
        };
        match self.0.get(service) {
            None => (UNKNOWN, UNKNOWN),
            Some(methods) if methods.contains(method) => (service, method),
            Some(_) => (service, UNKNOWN),
        }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around the server's routes.
#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    histogram: HistogramVec,
    known: Arc<KnownMethods>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GrpcMetrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (service, method) = self.known.labels(request.uri().path());
        let (service, method) = (service.to_owned(), method.to_owned());
        let histogram = self.histogram.clone();
        let start = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            let pending = Pending {
                histogram,
                service,
                method,
                seconds: start.elapsed().as_secs_f64(),
            };
            // A status in the headers is a trailers-only answer: final.
            let pending = match grpc_code(response.headers()) {
                Some(code) => {
                    pending.observe(code);
                    None
                }
                None => Some(pending),
            };
            Ok(response.map(|inner| MeteredBody { inner, pending }))
        })
    }
}

/// An observation waiting for the call's status.
struct Pending {
    histogram: HistogramVec,
    service: String,
    method: String,
    seconds: f64,
}

impl Pending {
    fn observe(self, code: &str) {
        self.histogram
            .with_label_values(&[self.service.as_str(), self.method.as_str(), code])
            .observe(self.seconds);
    }
}

/// The response body, observing the call once its trailers pass (or it
/// ends or is dropped without them).
pub struct MeteredBody<B> {
    inner: B,
    pending: Option<Pending>,
}

impl<B: Body + Unpin> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let code = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame
                .trailers_ref()
                .map(|trailers| grpc_code(trailers).unwrap_or(NO_STATUS)),
            Poll::Ready(Some(Err(_)) | None) => Some(NO_STATUS),
            Poll::Pending => None,
        };
        if let Some(code) = code
            && let Some(pending) = this.pending.take()
        {
            pending.observe(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.observe(NO_STATUS);
        }
    }
}

/// The canonical name of the `grpc-status` in `headers`, if any.
fn grpc_code(headers: &HeaderMap) -> Option<&'static str> {
    let code: i32 = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    Some(code_name(code))
}

/// The canonical (upper snake case) name of a gRPC status code.
fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => UNKNOWN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_only_declared_services_and_methods() {
        let layer = GrpcMetricsLayer::new(histogram().unwrap());
        let known = &layer.known;
        assert_eq!(
            known.labels("/nudge.v1.Ingest/Push"),
            ("nudge.v1.Ingest", "Push")
        );
        assert_eq!(
            known.labels("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health", "Check")
        );
        assert_eq!(
            known.labels("/nudge.v1.Ingest/user-42"),
            ("nudge.v1.Ingest", UNKNOWN)
        );
        assert_eq!(known.labels("/evil.Service/Push"), (UNKNOWN, UNKNOWN));
        assert_eq!(known.labels("/"), (UNKNOWN, UNKNOWN));
        assert_eq!(known.labels("/index.html"), (UNKNOWN, UNKNOWN));
    }

    #[test]
    fn reads_status_codes() {
        let mut headers = HeaderMap::new();
        assert_eq!(grpc_code(&headers), None);
        headers.insert("grpc-status", "3".parse().unwrap());
        assert_eq!(grpc_code(&headers), Some("INVALID_ARGUMENT"));
        headers.insert("grpc-status", "99".parse().unwrap());
        assert_eq!(grpc_code(&headers), Some(UNKNOWN));
    }
}
