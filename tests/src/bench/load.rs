//! The benchmark's load generator: a fixed number of closed-loop workers,
//! each on its own keep-alive HTTP/1.1 connection (hyper's connection-level
//! client, no pool, so the client adds as little as possible), all sending
//! the same pre-encoded body. Promises: in timed runs only requests that
//! start after the warm-up and end within the measured window count; every
//! latency of a 2xx is kept (exact percentiles); non-2xx answers count as
//! errors by status, failed connections as transport errors; in count runs
//! exactly that many requests succeed (refusals are sent again).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::Result;

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: &'static str,
    pub body: Bytes,
}

#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// Run for `warmup + measure`; only requests that start after the
    /// warm-up and end within the measured window count.
    Timed { warmup: Duration, measure: Duration },
    /// Send exactly this many successful requests (retrying refusals).
    Count(u64),
}

#[derive(Debug, Default, Clone)]
pub struct LoadResult {
    pub ok: u64,
    pub errors: u64,
    pub transport_errors: u64,
    pub elapsed: Duration,
    /// Latencies of successful requests, sorted, in nanoseconds.
    pub latencies: Vec<u64>,
    pub error_statuses: BTreeMap<u16, u64>,
}

impl LoadResult {
    pub fn per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1] as f64 / 1e6
    }
}

/// Closed-loop load: `concurrency` workers, one keep-alive connection each,
/// each sending its next request when the previous answer is read.
pub async fn run_load(target: &Target, concurrency: usize, stop: Stop) -> LoadResult {
    let target = Arc::new(target.clone());
    let remaining = Arc::new(AtomicI64::new(match stop {
        Stop::Count(n) => n as i64,
        Stop::Timed { .. } => i64::MAX,
    }));
    let begin = Instant::now();
    let (measure_from, end) = match stop {
        Stop::Timed { warmup, measure } => (begin + warmup, Some(begin + warmup + measure)),
        Stop::Count(_) => (begin, None),
    };
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (target, remaining) = (Arc::clone(&target), Arc::clone(&remaining));
            tokio::spawn(worker(target, remaining, measure_from, end))
        })
        .collect();
    let mut total = LoadResult::default();
    for w in workers {
        let part = w.await.expect("load worker panicked");
        total.ok += part.ok;
        total.errors += part.errors;
        total.transport_errors += part.transport_errors;
        total.latencies.extend(part.latencies);
        for (status, n) in part.error_statuses {
            *total.error_statuses.entry(status).or_default() += n;
        }
    }
    total.elapsed = match (stop, end) {
        (Stop::Timed { measure, .. }, _) => measure,
        _ => begin.elapsed(),
    };
    total.latencies.sort_unstable();
    total
}

async fn worker(
    target: Arc<Target>,
    remaining: Arc<AtomicI64>,
    measure_from: Instant,
    end: Option<Instant>,
) -> LoadResult {
    let mut result = LoadResult {
        latencies: Vec::with_capacity(1 << 16),
        ..LoadResult::default()
    };
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    let host = target.addr.to_string();
    loop {
        if end.is_some_and(|end| Instant::now() >= end) {
            break;
        }
        if remaining.fetch_sub(1, Ordering::Relaxed) <= 0 {
            break;
        }
        let mut sent_ok = false;
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            match connect(target.addr).await {
                Ok(s) => sender = Some(s),
                Err(_) => {
                    result.transport_errors += 1;
                    remaining.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let s = sender.as_mut().expect("connected");
        let request = Request::builder()
            .method(Method::POST)
            .uri(target.path)
            .header(HOST, &host)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(target.body.clone()))
            .expect("valid request");
        let started = Instant::now();
        let outcome = async {
            s.ready().await?;
            let response = s.send_request(request).await?;
            let status = response.status();
            response.into_body().collect().await?;
            Ok::<_, hyper::Error>(status)
        }
        .await;
        let done = Instant::now();
        let counted = started >= measure_from && end.is_none_or(|end| done <= end);
        match outcome {
            Ok(status) if status.is_success() => {
                sent_ok = true;
                if counted {
                    result.ok += 1;
                    result.latencies.push((done - started).as_nanos() as u64);
                }
            }
            Ok(status) => {
                if counted {
                    result.errors += 1;
                    *result.error_statuses.entry(status.as_u16()).or_default() += 1;
                }
                if status.as_u16() == 503 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Err(_) => {
                sender = None;
                if counted {
                    result.transport_errors += 1;
                }
            }
        }
        if !sent_ok {
            // In count mode, a refused request is sent again.
            remaining.fetch_add(1, Ordering::Relaxed);
        }
    }
    result
}
