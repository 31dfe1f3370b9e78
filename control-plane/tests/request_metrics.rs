//! Metrics read from the admin port's `/metrics` of a running control
//! plane: the request duration histograms of the HTTP API and the gRPC
//! server (labelled by route templates, bounded names and status codes,
//! never the ids or tokens of the requests), and the housekeeping tasks,
//! every one of which runs at start-up.

use std::net::SocketAddr;

use nudge_control_plane::{Config, Listeners};
use nudge_proto::v1::envelope::Body;
use nudge_proto::v1::ingest_client::IngestClient;
use nudge_proto::v1::management_client::ManagementClient;
use nudge_proto::v1::{Envelope, ListTypesRequest, PushRequest, Track};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "test-admin-token";

struct Running {
    grpc: SocketAddr,
    http: SocketAddr,
    admin: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), nudge_control_plane::Error>>,
}

impl Running {
    async fn start(dir: &std::path::Path) -> Running {
        let args = [
            "nudge-control-plane".to_owned(),
            "--data-dir".to_owned(),
            dir.display().to_string(),
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
        }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> u16 {
        let mut request = reqwest::Client::new().get(format!("http://{}{path}", self.http));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap().status().as_u16()
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

/// The sum of `{metric}_count` over the series carrying every label in
/// `labels` (as `name="value"`).
fn count(text: &str, metric: &str, labels: &[&str]) -> u64 {
    let prefix = format!("{metric}_count{{");
    text.lines()
        .filter(|line| line.starts_with(&prefix))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

const HTTP: &str = "nudge_cp_http_request_duration_seconds";
const GRPC: &str = "nudge_cp_grpc_request_duration_seconds";

#[tokio::test]
async fn http_durations_are_labelled_by_route_template() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path()).await;

    // `/v1/me/` is off without a user token secret: still a matched route.
    server.get("/v1/me/notifications/abc-secret-id", None).await;
    let profile = server
        .get("/v1/admin/users/user-secret-42/profile", Some(TOKEN))
        .await;
    assert_eq!(server.get("/no/such/route/secret-token", None).await, 404);
    assert_eq!(server.get("/healthz", None).await, 200);

    let text = server.metrics().await;
    assert!(text.contains(&format!("# HELP {HTTP} ")), "{text}");
    assert_eq!(
        count(
            &text,
            HTTP,
            &[r#"route="/v1/me/notifications/{id}""#, r#"method="GET""#]
        ),
        1,
        "{text}"
    );
    assert_eq!(
        count(
            &text,
            HTTP,
            &[
                r#"route="/v1/admin/users/{user_id}/profile""#,
                &format!(r#"status="{profile}""#)
            ]
        ),
        1,
        "{text}"
    );
    assert_eq!(
        count(&text, HTTP, &[r#"route="unmatched""#, r#"status="404""#]),
        1,
        "{text}"
    );
    assert_eq!(
        count(&text, HTTP, &[r#"route="/healthz""#, r#"status="200""#]),
        1,
        "{text}"
    );
    for secret in ["abc-secret-id", "user-secret-42", "secret-token"] {
        assert!(!text.contains(secret), "{secret} in labels:\n{text}");
    }
    server.stop().await;
}

#[tokio::test]
async fn grpc_durations_are_labelled_by_service_method_and_code() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path()).await;
    let url = format!("http://{}", server.grpc);

    let mut ingest = IngestClient::connect(url.clone()).await.unwrap();
    let envelope = Envelope {
        id: "e1".to_owned(),
        user_id: "u1".to_owned(),
        context_json: "{}".to_owned(),
        body: Some(Body::Track(Track {
            event: "Clicked".to_owned(),
            properties_json: "{}".to_owned(),
        })),
        ..Default::default()
    };
    let reply = ingest
        .push(PushRequest {
            agent_id: "test-agent".to_owned(),
            batch_id: "b1".to_owned(),
            sent_at: Some(nudge_proto::timestamp(std::time::SystemTime::now())),
            envelopes: vec![envelope],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.stored, 1);
    // No token: refused before any answer, the status in the headers.
    let mut manage = ManagementClient::connect(url).await.unwrap();
    let refused = manage.list_types(ListTypesRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let text = server.metrics().await;
    assert_eq!(
        count(
            &text,
            GRPC,
            &[
                r#"service="nudge.v1.Ingest""#,
                r#"method="Push""#,
                r#"code="OK""#
            ]
        ),
        1,
        "{text}"
    );
    assert_eq!(
        count(
            &text,
            GRPC,
            &[
                r#"service="nudge.v1.Management""#,
                r#"method="ListTypes""#,
                r#"code="UNAUTHENTICATED""#
            ]
        ),
        1,
        "{text}"
    );
    server.stop().await;
}

/// Every housekeeping task of `control-plane/src/housekeeping.rs` runs in
/// the program: once at start-up, successfully, on an empty store.
#[tokio::test]
async fn every_housekeeping_task_runs_at_start_up() {
    const TASKS: [&str; 10] = [
        "partitions",
        "dedupe",
        "retention",
        "devices",
        "idempotency_keys",
        "throttle_decisions",
        "inbox_changes",
        "trigger_markers",
        "leases",
        "callback_ids",
    ];
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path()).await;
    let succeeded = |text: &str, task: &str| {
        let prefix =
            format!("nudge_cp_housekeeping_last_success_timestamp_seconds{{task=\"{task}\"}} ");
        text.lines().any(|line| line.starts_with(&prefix))
    };
    let mut text = String::new();
    for _ in 0..300 {
        text = server.metrics().await;
        if TASKS.iter().all(|task| succeeded(&text, task)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for task in TASKS {
        assert!(succeeded(&text, task), "{task} never succeeded:\n{text}");
        assert!(
            text.contains(&format!(
                "nudge_cp_housekeeping_failures_total{{task=\"{task}\"}} 0"
            )),
            "{task} failed"
        );
    }
    server.stop().await;
}
