//! The analytics reports over the real control plane (`run` on
//! 127.0.0.1:0): `GET /v1/admin/analytics/{report}` over HTTP and
//! `nudge.v1.Analytics/GetReport` with a real tonic client. What is checked
//! is the API: auth, the refusals naming their parameter, the answer's
//! shape, and HTTP JSON, HTTP CSV and gRPC agreeing on the table. The
//! figures themselves are the analytics module's tests' business: nothing
//! here assumes a number.

use std::net::SocketAddr;

use nudge_control_plane::analytics::ReportName;
use nudge_control_plane::{Config, Listeners};
use nudge_proto::v1::analytics_client::AnalyticsClient;
use nudge_proto::v1::{ReportRequest, ReportResponse};
use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request};

const TOKEN: &str = "analytics-api-test-token";
const RANGE: &str = "from=2026-01-01&to=2026-01-31";

struct Running {
    grpc: SocketAddr,
    http: SocketAddr,
    admin: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), nudge_control_plane::Error>>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start() -> Running {
        let dir = tempfile::tempdir().unwrap();
        let args = [
            "nudge-control-plane".to_owned(),
            format!("--data-dir={}", dir.path().display()),
            "--grpc-listen=127.0.0.1:0".to_owned(),
            "--http-listen=127.0.0.1:0".to_owned(),
            "--admin-listen=127.0.0.1:0".to_owned(),
            format!("--admin-token={TOKEN}"),
        ];
        let config = <Config as clap::Parser>::try_parse_from(args).unwrap();
        let listeners = Listeners::bind(&config).await.unwrap();
        let (grpc, http, admin) = (
            listeners.grpc.local_addr().unwrap(),
            listeners.http.local_addr().unwrap(),
            listeners.admin.local_addr().unwrap(),
        );
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(nudge_control_plane::run(
            config,
            listeners,
            shutdown.clone(),
        ));
        Running {
            grpc,
            http,
            admin,
            shutdown,
            task,
            _dir: dir,
        }
    }

    /// `GET /v1/admin/analytics/{path_and_query}` with `token`.
    async fn get(&self, path_and_query: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = reqwest::Client::new().get(format!(
            "http://{}/v1/admin/analytics/{path_and_query}",
            self.http
        ));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    /// The status and JSON body of an authorised GET.
    async fn json(&self, path_and_query: &str) -> (StatusCode, Value) {
        let reply = self.get(path_and_query, Some(TOKEN)).await;
        let status = reply.status();
        let text = reply.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{path_and_query}: not JSON: {text}"));
        (status, body)
    }

    async fn client(&self) -> AnalyticsClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
        AnalyticsClient::new(channel)
    }

    async fn report(&self, request: ReportRequest) -> Result<ReportResponse, tonic::Status> {
        let mut request = Request::new(request);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        self.client()
            .await
            .get_report(request)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

fn january(report: &str) -> ReportRequest {
    ReportRequest {
        report: report.to_owned(),
        from: "2026-01-01".to_owned(),
        to: "2026-01-31".to_owned(),
        ..ReportRequest::default()
    }
}

fn columns(body: &Value) -> Vec<String> {
    body["columns"]
        .as_array()
        .unwrap_or_else(|| panic!("no columns array: {body}"))
        .iter()
        .map(|column| {
            column
                .as_str()
                .expect("column names are strings")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn the_admin_token_is_required() {
    let running = Running::start().await;
    for token in [None, Some("not-the-token")] {
        let reply = running.get(&format!("summary?{RANGE}"), token).await;
        assert_eq!(reply.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(reply.headers()["www-authenticate"], "Bearer");
        let body: Value = reply.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    // Even an unknown report: the token is checked first.
    let reply = running.get("nope", None).await;
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);

    let status = running
        .client()
        .await
        .get_report(january("summary"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let mut request = Request::new(january("summary"));
    request
        .metadata_mut()
        .insert("authorization", "Bearer guess".parse().unwrap());
    let status = running
        .client()
        .await
        .get_report(request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    running.stop().await;
}

#[tokio::test]
async fn an_unknown_report_is_not_found_and_the_reports_are_listed() {
    let running = Running::start().await;
    let (status, body) = running.json(&format!("nope?{RANGE}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "unknown_report");
    let message = body["error"]["message"].as_str().unwrap();
    for name in ReportName::ALL {
        assert!(message.contains(name.as_str()), "{message}");
    }

    let status = running.report(january("nope")).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("summary"), "{status:?}");
    let status = running.report(january("")).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    running.stop().await;
}

#[tokio::test]
async fn every_bad_parameter_is_refused_by_name() {
    let running = Running::start().await;
    let cases = [
        ("from=2026-13-01", "from"),
        ("from=yesterday", "from"),
        ("from=2026-02-30", "from"),
        ("to=2026-1-31", "to"),
        ("to=2026-01-31T00:00:00Z", "to"),
        ("from=2026-02-01&to=2026-01-31", "from"),
        ("channel=pigeon", "channel"),
        ("granularity=fortnight", "granularity"),
        ("format=xml", "format"),
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("limit=-1", "limit"),
        ("limit=many", "limit"),
        ("user=a%00b", "user"),
        ("colour=red", "colour"),
        ("user=a&user=b", "user"),
    ];
    for (query, parameter) in cases {
        let (status, body) = running.json(&format!("summary?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("{parameter}: ")),
            "{query}: the message should name {parameter}: {message}"
        );
    }
    // The same refusals over gRPC, naming the proto field.
    let grpc_cases = [
        (
            ReportRequest {
                from: "2026-01-32".to_owned(),
                ..january("summary")
            },
            "from",
        ),
        (
            ReportRequest {
                to: "31/01/2026".to_owned(),
                ..january("summary")
            },
            "to",
        ),
        (
            ReportRequest {
                from: "2026-02-01".to_owned(),
                ..january("summary")
            },
            "from",
        ),
        (
            ReportRequest {
                channel: "pigeon".to_owned(),
                ..january("summary")
            },
            "channel",
        ),
        (
            ReportRequest {
                granularity: "fortnight".to_owned(),
                ..january("summary")
            },
            "granularity",
        ),
        (
            ReportRequest {
                format: "xml".to_owned(),
                ..january("summary")
            },
            "format",
        ),
        (
            ReportRequest {
                limit: 10_001,
                ..january("summary")
            },
            "limit",
        ),
    ];
    for (request, field) in grpc_cases {
        let status = running.report(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
        assert!(
            status.message().starts_with(&format!("{field}: ")),
            "{request:?}: {status:?}"
        );
    }
    running.stop().await;
}

/// Each report is asked over January; a report that refuses the query
/// (per-user reports want a `user`) is asked again with one, after
/// checking that gRPC refuses it alike.
const ATTEMPTS: [Option<&str>; 2] = [None, Some("u1")];

#[tokio::test]
async fn json_csv_and_grpc_agree_on_every_report() {
    let running = Running::start().await;
    for name in ReportName::ALL {
        let name = name.as_str();
        let mut answered = false;
        for user in ATTEMPTS {
            let query = match user {
                None => RANGE.to_owned(),
                Some(user) => format!("{RANGE}&user={user}"),
            };
            let request = ReportRequest {
                user: user.unwrap_or_default().to_owned(),
                ..january(name)
            };
            let (status, body) = running.json(&format!("{name}?{query}")).await;
            if status == StatusCode::BAD_REQUEST {
                // Refused by the report: gRPC refuses with the same words.
                let refused = running.report(request).await.unwrap_err();
                assert_eq!(refused.code(), Code::InvalidArgument, "{name}: {refused:?}");
                assert_eq!(refused.message(), body["error"]["message"], "{name}");
                continue;
            }
            assert_eq!(status, StatusCode::OK, "{name}?{query}: {body}");
            agree(&running, name, &query, request, &body).await;
            answered = true;
            break;
        }
        assert!(answered, "{name} refused every query tried");
    }
    running.stop().await;
}

/// The HTTP JSON answer `body` to `name?query`, its CSV and the gRPC
/// answer to `request` are one table.
async fn agree(running: &Running, name: &str, query: &str, request: ReportRequest, body: &Value) {
    assert_eq!(body["report"], name);
    assert!(body["currency"].as_str().is_some_and(|c| !c.is_empty()));
    let columns = columns(body);
    let rows = body["rows"].as_array().expect("rows is an array");
    for row in rows {
        let keys = row.as_object().expect("a row is an object").len();
        assert_eq!(keys, columns.len(), "{name}: {row}");
    }
    if name == "summary" {
        // The summary always has its columns (even over no events);
        // other reports' columns are the analytics module's to check.
        assert!(!columns.is_empty(), "summary has no columns: {body}");
    }

    let reply = running
        .get(&format!("{name}?{query}&format=csv"), Some(TOKEN))
        .await;
    assert_eq!(reply.status(), StatusCode::OK, "{name}");
    assert_eq!(reply.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        reply.headers()["content-disposition"],
        format!("attachment; filename=\"nudge-{name}-2026-01-01-2026-01-31.csv\"").as_str()
    );
    let csv = reply.text().await.unwrap();
    let header = csv.split("\r\n").next().unwrap();
    assert_eq!(header, columns.join(","), "{name}: {csv}");
    assert_eq!(csv.split("\r\n").count(), rows.len() + 2, "{name}: {csv}");

    let grpc = running
        .report(ReportRequest {
            format: "csv".to_owned(),
            ..request.clone()
        })
        .await
        .unwrap();
    assert_eq!(grpc.report, name);
    assert_eq!(grpc.currency, body["currency"].as_str().unwrap());
    assert_eq!(grpc.columns, columns, "{name}");
    assert_eq!(grpc.rows.len(), rows.len(), "{name}");
    assert!(
        grpc.rows
            .iter()
            .all(|row| row.values.len() == columns.len()),
        "{name}"
    );
    assert_eq!(grpc.csv, csv, "{name}");
    let plain = running.report(request).await.unwrap();
    assert!(plain.csv.is_empty(), "{name}: csv only when asked");
    assert_eq!(plain.columns, columns);
}

#[tokio::test]
async fn filters_parse_and_requests_are_measured() {
    let running = Running::start().await;
    // Every parameter at once, all well-formed; empty values are unset.
    let (status, body) = running
        .json(
            "summary?from=2026-01-01&to=2026-01-01&user=&type=&channel=email\
             &resource=&funnel=&granularity=week&limit=10000&format=json",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let reply = running.get("summary?format=csv", Some(TOKEN)).await;
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(
        reply.headers()["content-disposition"],
        "attachment; filename=\"nudge-summary.csv\""
    );
    running
        .report(ReportRequest {
            granularity: "week".to_owned(),
            limit: 5,
            ..january("summary")
        })
        .await
        .unwrap();

    let metrics = running.metrics().await;
    let http = metrics.lines().any(|line| {
        line.starts_with("nudge_cp_http_request_duration_seconds_count{")
            && line.contains("route=\"/v1/admin/analytics/{report}\"")
    });
    assert!(http, "no HTTP duration for the analytics route:\n{metrics}");
    let grpc = metrics.lines().any(|line| {
        line.starts_with("nudge_cp_grpc_request_duration_seconds_count{")
            && line.contains("service=\"nudge.v1.Analytics\"")
            && line.contains("method=\"GetReport\"")
    });
    assert!(grpc, "no gRPC duration for GetReport:\n{metrics}");
    running.stop().await;
}
