//! The web inbox in a real browser: Debian's `chromium`, driven by
//! `playwright-core` from a plain Node script (`tests/browser/inbox.spec.mjs`).
//!
//! The real control plane and agent run as always; this test serves an
//! application's page on another origin that adds the widget with one
//! script tag and a signed user token, exactly as the README shows, then
//! lets the script check: the badge follows the live stream (WebSocket)
//! when the app tracks an event at the agent, opening the dropdown and
//! clicking an item marks it read (also through the REST API), Escape
//! closes the dropdown and returns focus to the bell, the full inbox's
//! bulk archive, the preferences page saves (checked through
//! `GET /v1/me/preferences`), and it lists the topics the user follows
//! (subscribed here through the admin API) and leaves them. It keeps a
//! screenshot in `target/`.
//!
//! `scripts/test` installs both tools and sets `NUDGE_TEST_CHROMIUM` and
//! `NUDGE_TEST_PLAYWRIGHT`.

// `support` is shared with `e2e.rs`; this binary uses only part of it.
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use axum::response::Html;
use axum::routing::get;
use serde_json::json;

use nudge_control_plane::http::user_auth::UserTokenSecret;
use nudge_e2e::{Agent, ControlPlane};
use support::{installed_tool, setup, workspace_dir};

/// Shared by the "application's backend" (this test) and the control plane.
const USER_TOKEN_SECRET: &str = "web-inbox-e2e-user-token-secret-0123456789";
const USER: &str = "web-user-1";
/// Topics an operator subscribes the user to, by name (as the page lists
/// them). The script leaves the second (its `/` encoded in the path) on
/// the page, then the first once it is already gone (a `404`).
const TOPICS: [&str; 2] = ["project:7", "team/design@acme"];
/// The whole browser script, however slow the machine.
const BROWSER_LIMIT: Duration = Duration::from_secs(240);

const ENGINE: &str = r#"
[types.comment]
channels = ["in_app"]
category = "social"

[types.comment.templates]
fallback = { title = "{{ data.author }} commented", text = "{{ data.text }}" }

[types.security_alert]
channels = ["in_app"]
critical = true
category = "security"

[types.security_alert.templates]
fallback = { title = "New sign-in", text = "A new sign-in from {{ data.city }}" }

[types.newsletter]
channels = ["in_app"]
frequency = "weekly"
category = "news"

[types.newsletter.templates]
fallback = { title = "News", text = "{{ data.summary }}" }

[[rules]]
name = "comment-posted"
on = "Comment Posted"
notify = "comment"
"#;

/// The application's page: the widget in one tag, on another origin than
/// the control plane's.
fn host_page(control_plane: &str, token: &str) -> String {
    format!(
        r##"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>An application</title>
<script src="{control_plane}/inbox.js" data-nudge-token="{token}" data-nudge-target="#bell" defer></script>
</head>
<body>
<header><strong>An application</strong> <span id="bell"></span></header>
<main><p>Some content.</p><button id="elsewhere" type="button">Elsewhere</button></main>
</body>
</html>
"##
    )
}

/// A topic name as one path segment: `/` is the only one of its
/// characters (`A-Z a-z 0-9 _ . : - / @`) that a segment cannot hold as is.
fn path_segment(topic: &str) -> String {
    topic.replace('/', "%2F")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_inbox_works_in_a_real_browser() {
    let chromium = installed_tool("NUDGE_TEST_CHROMIUM", "/usr/bin/chromium", "chromium");
    let playwright = installed_tool(
        "NUDGE_TEST_PLAYWRIGHT",
        ".tools/node_modules/playwright-core",
        "playwright-core",
    );

    let config = tempfile::tempdir().unwrap();
    let config_path = config.path().join("nudge.toml");
    std::fs::write(&config_path, ENGINE).unwrap();
    let mut control_plane = ControlPlane::new(setup()).unwrap().with_env([
        ("NUDGE_CP_CONFIG", config_path.to_str().unwrap()),
        ("NUDGE_CP_USER_TOKEN_SECRET", USER_TOKEN_SECRET),
    ]);
    control_plane.start().await.unwrap();
    let agent = Agent::started(setup(), &control_plane.grpc_url(), &[])
        .await
        .unwrap();
    let control_plane_url = format!("http://{}", control_plane.http);

    let secret: UserTokenSecret = USER_TOKEN_SECRET.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = secret.sign(&json!({"sub": USER, "exp": now + 3600}));

    for topic in TOPICS {
        let (status, answer) = control_plane
            .admin_send(
                reqwest::Method::PUT,
                &format!(
                    "/v1/admin/topics/{}/subscribers/{USER}",
                    path_segment(topic)
                ),
                None,
            )
            .await
            .unwrap();
        assert_eq!(status, 201, "subscribe {USER} to {topic}: {answer}");
    }

    let page = host_page(&control_plane_url, &token);
    let app = axum::Router::new().route("/", get(move || async move { Html(page) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host_url = format!("http://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let screenshot = workspace_dir().join("target/web-inbox.png");
    let started = Instant::now();
    let mut node = tokio::process::Command::new("node");
    node.arg(workspace_dir().join("tests/browser/inbox.spec.mjs"))
        .env("NUDGE_TEST_CHROMIUM", &chromium)
        .env("NUDGE_TEST_PLAYWRIGHT", &playwright)
        .env("NUDGE_HOST_URL", &host_url)
        .env("NUDGE_CP_URL", &control_plane_url)
        .env("NUDGE_AGENT_URL", agent.url(""))
        .env("NUDGE_USER", USER)
        .env("NUDGE_TOKEN", &token)
        .env("NUDGE_TOPICS", TOPICS.join(","))
        .env("NUDGE_SCREENSHOT", &screenshot)
        .kill_on_drop(true);
    let output = tokio::time::timeout(BROWSER_LIMIT, node.output())
        .await
        .unwrap_or_else(|_| panic!("the browser script ran longer than {BROWSER_LIMIT:?}"))
        .expect("run node (Node.js is required)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!(
        "--- inbox.spec.mjs ({:.1?}) stdout\n{stdout}",
        started.elapsed()
    );
    println!("--- inbox.spec.mjs stderr\n{stderr}");
    assert!(
        output.status.success(),
        "the browser script failed ({}):\n{stdout}\n{stderr}\n{}",
        output.status,
        control_plane.process.log_tail(40)
    );
    assert!(
        screenshot.exists(),
        "no screenshot at {}",
        screenshot.display()
    );
    println!("screenshot: {}", screenshot.display());
    server.abort();

    // The script left both topics through the page (the second after it
    // was already gone): the operators' view agrees.
    let followed = control_plane
        .admin_get(&format!("/v1/admin/users/{USER}/topics"))
        .await
        .unwrap();
    assert_eq!(followed["topics"], json!([]), "{followed}");

    // The preferences API's refusals, reset and CORS, without a browser;
    // every answer held to openapi.json (`ControlPlane::send_as`).
    let client = reqwest::Client::new();
    let preferences = format!("{control_plane_url}/v1/me/preferences");
    let (status, body) = control_plane
        .send_as(
            Some(&token),
            reqwest::Method::PUT,
            "/v1/me/preferences",
            Some(&json!({"types": {"security_alert": {"channels": {"in_app": false}}}})),
        )
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("critical"), "{body}");
    let (status, _) = control_plane
        .send_as(None, reqwest::Method::GET, "/v1/me/preferences", None)
        .await
        .unwrap();
    assert_eq!(status, 401);
    let (status, reset) = control_plane
        .send_as(
            Some(&token),
            reqwest::Method::DELETE,
            "/v1/me/preferences",
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{reset}");
    let reset: serde_json::Value = serde_json::from_str(&reset).unwrap();
    assert_eq!(reset["types"], json!({}), "{reset}");
    assert_eq!(
        reset["timezone"], "Europe/Berlin",
        "the zone is kept: {reset}"
    );
    let preflight = client
        .request(reqwest::Method::OPTIONS, &preferences)
        .header("origin", "http://app.example")
        .header("access-control-request-method", "PUT")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
}
