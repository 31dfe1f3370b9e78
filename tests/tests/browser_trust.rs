//! Issue 15: what a browser holding the public write key may do, against the
//! real agent and control plane.
//!
//! A "page" here is an HTTP request shaped as a browser sends it: an
//! `Origin` header, analytics.js's `text/plain` body with the write key in
//! it. (Browsers add `Origin` to every POST and a page cannot remove it; the
//! rule relies on nothing else a page controls.) Each test checks both
//! sides: the agent's answer, and what the control plane stored — a refused
//! address never reaches a profile, a refused notify never becomes an
//! event, and the same calls from a backend or with a server key do. The
//! last test does the same from a page in a real browser (Debian's
//! `chromium` driven by `playwright-core`, `tests/browser/trust.spec.mjs`),
//! which `scripts/test` installs and names in `NUDGE_TEST_CHROMIUM` and
//! `NUDGE_TEST_PLAYWRIGHT`.

// `support` is shared with `e2e.rs`; this binary uses only part of it.
#[allow(dead_code)]
mod support;

use reqwest::header::{self, HeaderMap};
use serde_json::{Value, json};

use nudge_e2e::metrics::metric_value;
use nudge_e2e::{Agent, ControlPlane};
use support::{installed_tool, setup, wait_until, workspace_dir};

const SHOP: &str = "https://shop.example";
const SERVER_KEY: &str = "e2e-server-key-0123456789abcdef";

/// One request to the agent's intake; `origin` makes it a page's.
struct Call<'a> {
    method: reqwest::Method,
    path: &'a str,
    origin: Option<&'a str>,
    basic: Option<&'a str>,
    body: Option<Value>,
}

impl<'a> Call<'a> {
    /// A POST as analytics.js sends it from a page on `origin`.
    fn page(origin: &'a str, path: &'a str, body: Value) -> Self {
        Self {
            method: reqwest::Method::POST,
            path,
            origin: Some(origin),
            basic: None,
            body: Some(body),
        }
    }

    /// A POST from a backend: no Origin.
    fn backend(path: &'a str, body: Value) -> Self {
        Self {
            method: reqwest::Method::POST,
            path,
            origin: None,
            basic: None,
            body: Some(body),
        }
    }

    /// The CORS preflight a page's browser sends before a JSON POST.
    fn preflight(origin: &'a str, path: &'a str) -> Self {
        Self {
            method: reqwest::Method::OPTIONS,
            path,
            origin: Some(origin),
            basic: None,
            body: None,
        }
    }

    fn with_basic(mut self, key: &'a str) -> Self {
        self.basic = Some(key);
        self
    }

    async fn send(self, agent: &Agent) -> (u16, HeaderMap, Value) {
        let mut request = reqwest::Client::new().request(self.method, agent.url(self.path));
        if let Some(origin) = self.origin {
            request = request
                .header(header::ORIGIN, origin)
                .header("access-control-request-method", "POST");
        }
        if let Some(key) = self.basic {
            request = request.basic_auth(key, Some(""));
        }
        if let Some(body) = self.body {
            request = request
                .header(header::CONTENT_TYPE, "text/plain;charset=UTF-8")
                .body(body.to_string());
        }
        let reply = request.send().await.unwrap();
        let status = reply.status().as_u16();
        let headers = reply.headers().clone();
        let text = reply.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }
}

fn assert_refused(answer: &(u16, HeaderMap, Value), code: &str) {
    assert_eq!(answer.0, 403, "{answer:?}");
    assert_eq!(answer.2["success"], false, "{answer:?}");
    assert_eq!(answer.2["code"], code, "{answer:?}");
}

fn assert_accepted(answer: &(u16, HeaderMap, Value)) {
    assert_eq!(answer.0, 200, "{answer:?}");
    assert_eq!(answer.2["success"], true, "{answer:?}");
}

async fn rejected(agent: &Agent, reason: &str) -> f64 {
    let text = agent.metrics().await.unwrap();
    let label = format!("reason=\"{reason}\"");
    metric_value(&text, "nudge_agent_requests_rejected_total", Some(&label)).unwrap_or(0.0)
}

/// Waits until `count` events of `user` are stored and returns them.
async fn stored_events(control_plane: &ControlPlane, user: &str, count: usize) -> Vec<Value> {
    wait_until(&format!("{count} events of {user} are stored"), || async {
        control_plane.events_for_user(user).await.unwrap().len() >= count
    })
    .await;
    control_plane.events_for_user(user).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_server_keys_a_page_cannot_set_an_address_or_notify_but_a_backend_can() {
    let control_plane = ControlPlane::started(setup()).await.unwrap();
    let agent = Agent::started(setup(), &control_plane.grpc_url(), &[])
        .await
        .unwrap();
    let victim = format!("victim-{}", std::process::id());

    // The attack of the issue: a page script identifies someone else with
    // its own address, then asks for a notification.
    let takeover = json!({"userId": victim, "writeKey": "public-key",
                          "traits": {"email": "attacker@evil.example", "plan": "pro"}});
    let answer = Call::page(SHOP, "/v1/identify", takeover)
        .send(&agent)
        .await;
    assert_refused(&answer, "contact_trait_refused");
    assert!(
        answer.2["message"]
            .as_str()
            .unwrap()
            .contains("trait `email`"),
        "{answer:?}"
    );
    assert_eq!(
        answer.1[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "*",
        "the page reads why"
    );
    let batch = json!({"writeKey": "public-key", "batch": [
        {"type": "page", "userId": victim, "name": "Home"},
        {"type": "identify", "userId": victim, "traits": {"phone": "+15550100"}},
    ]});
    let answer = Call::page(SHOP, "/v1/batch", batch).send(&agent).await;
    assert_refused(&answer, "contact_trait_refused");
    assert!(
        answer.2["message"]
            .as_str()
            .unwrap()
            .starts_with("batch item 1 (identify)"),
        "{answer:?}"
    );
    let notify = json!({"userId": victim, "writeKey": "public-key", "type": "account_alert",
                        "title": "Hi", "body": "from a page", "channels": ["in_app"]});
    let answer = Call::page(SHOP, "/v1/notify", notify.clone())
        .send(&agent)
        .await;
    assert_refused(&answer, "server_key_required");
    assert!(!answer.1.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    let (status, headers, _) = Call::preflight(SHOP, "/v1/notify").send(&agent).await;
    assert_eq!(status, 403);
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    assert_eq!(
        agent
            .metric("nudge_agent_events_received_total")
            .await
            .unwrap(),
        0.0
    );
    assert_eq!(rejected(&agent, "contact_trait_refused").await, 2.0);
    assert_eq!(rejected(&agent, "server_key_required").await, 2.0);

    // What a page may still do, and the same address and notify from the
    // application's backend (no Origin), as before issue 15.
    let page = json!({"userId": victim, "writeKey": "public-key",
                      "traits": {"name": "Vic"}});
    assert_accepted(&Call::page(SHOP, "/v1/identify", page).send(&agent).await);
    let own = json!({"userId": victim, "traits": {"email": "victim@example.com"}});
    assert_accepted(&Call::backend("/v1/identify", own).send(&agent).await);
    assert_accepted(&Call::backend("/v1/notify", notify).send(&agent).await);

    let events = stored_events(&control_plane, &victim, 3).await;
    assert_eq!(events.len(), 3, "only the accepted calls: {events:#?}");
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains("attacker@evil.example"), "{text}");
    assert!(!text.contains("+15550100"), "{text}");
    let profile = control_plane
        .admin_get(&format!("/v1/admin/users/{victim}/profile"))
        .await
        .unwrap();
    assert_eq!(
        profile["traits"]["email"], "victim@example.com",
        "{profile}"
    );
    assert_eq!(profile["traits"]["name"], "Vic", "{profile}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_server_keys_only_the_key_is_trusted_and_cors_follows_the_origin_list() {
    let control_plane = ControlPlane::started(setup()).await.unwrap();
    let agent = Agent::started(
        setup(),
        &control_plane.grpc_url(),
        &[
            ("NUDGE_AGENT_WRITE_KEYS", "public-key"),
            ("NUDGE_AGENT_SERVER_KEYS", SERVER_KEY),
            ("NUDGE_AGENT_CORS_ORIGINS", SHOP),
        ],
    )
    .await
    .unwrap();
    let user = format!("keyed-{}", std::process::id());

    // CORS answers per origin; a page of another origin is refused even
    // for a simple (unpreflighted) post.
    let (status, headers, _) = Call::preflight(SHOP, "/v1/t").send(&agent).await;
    assert_eq!(status, 204);
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], SHOP);
    let (status, headers, body) = Call::preflight("https://evil.example", "/v1/t")
        .send(&agent)
        .await;
    assert_eq!((status, &body["code"]), (403, &json!("origin_not_allowed")));
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    let visit = json!({"userId": user, "writeKey": "public-key", "name": "Home"});
    let answer = Call::page("https://evil.example", "/v1/page", visit.clone())
        .send(&agent)
        .await;
    assert_refused(&answer, "origin_not_allowed");

    // Once server keys exist, a backend without one is not trusted either.
    let notify = json!({"userId": user, "type": "account_alert", "title": "Hi",
                        "channels": ["in_app"]});
    let mut public = notify.clone();
    public["writeKey"] = json!("public-key");
    assert_refused(
        &Call::backend("/v1/notify", public).send(&agent).await,
        "server_key_required",
    );
    let address = json!({"userId": user, "writeKey": "public-key",
                         "traits": {"email": "someone@example.com"}});
    assert_refused(
        &Call::backend("/v1/identify", address).send(&agent).await,
        "contact_trait_refused",
    );
    assert_eq!(
        agent
            .metric("nudge_agent_events_received_total")
            .await
            .unwrap(),
        0.0
    );

    // With the server key: as the Basic user name (server libraries) or as
    // `writeKey`; a listed page's visit goes through as always.
    assert_accepted(
        &Call::backend("/v1/notify", notify)
            .with_basic(SERVER_KEY)
            .send(&agent)
            .await,
    );
    let address = json!({"userId": user, "writeKey": SERVER_KEY,
                         "traits": {"email": "user@example.com"}});
    assert_accepted(&Call::backend("/v1/identify", address).send(&agent).await);
    let answer = Call::page(SHOP, "/v1/page", visit).send(&agent).await;
    assert_accepted(&answer);
    assert_eq!(answer.1[header::ACCESS_CONTROL_ALLOW_ORIGIN], SHOP);

    let events = stored_events(&control_plane, &user, 3).await;
    assert_eq!(events.len(), 3, "{events:#?}");
    let text = serde_json::to_string(&events).unwrap();
    assert!(
        !text.contains(SERVER_KEY),
        "a server key never leaves the agent: {text}"
    );
    assert!(!text.contains("someone@example.com"), "{text}");
    for event in &events {
        let key = event["write_key"].as_str().unwrap();
        match event["type"].as_str().unwrap() {
            "page" => assert_eq!(key, "public-key"),
            _ => assert!(key.starts_with("server-key:"), "{event}"),
        }
    }
    let profile = control_plane
        .admin_get(&format!("/v1/admin/users/{user}/profile"))
        .await
        .unwrap();
    assert_eq!(profile["traits"]["email"], "user@example.com", "{profile}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_in_a_real_browser_can_neither_notify_nor_set_an_address() {
    let chromium = installed_tool("NUDGE_TEST_CHROMIUM", "/usr/bin/chromium", "chromium");
    let playwright = installed_tool(
        "NUDGE_TEST_PLAYWRIGHT",
        ".tools/node_modules/playwright-core",
        "playwright-core",
    );
    let control_plane = ControlPlane::started(setup()).await.unwrap();
    let agent = Agent::started(setup(), &control_plane.grpc_url(), &[])
        .await
        .unwrap();
    let user = format!("browser-{}", std::process::id());

    // The application's page, on another origin (port) than the agent.
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async {
            axum::response::Html("<!doctype html><title>An application</title>")
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host_url = format!("http://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let output = tokio::process::Command::new("node")
        .arg(workspace_dir().join("tests/browser/trust.spec.mjs"))
        .env("NUDGE_TEST_CHROMIUM", &chromium)
        .env("NUDGE_TEST_PLAYWRIGHT", &playwright)
        .env("NUDGE_HOST_URL", &host_url)
        .env("NUDGE_AGENT_URL", agent.url(""))
        .env("NUDGE_USER", &user)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run node (Node.js is required)");
    server.abort();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "trust.spec.mjs failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));

    assert_eq!(
        format!("{}/", seen["origin"].as_str().unwrap()),
        host_url,
        "{seen}"
    );
    // The refusal is readable (the page may call; it may not set addresses).
    assert_eq!(seen["address"]["status"], 403, "{seen}");
    assert_eq!(
        seen["address"]["body"]["code"], "contact_trait_refused",
        "{seen}"
    );
    // Notify answers no CORS: the page sees only a network error, whether
    // the browser sent the post (text/plain) or stopped at the preflight.
    assert_eq!(seen["notifySimple"]["error"], "TypeError", "{seen}");
    assert_eq!(seen["notifyJson"]["error"], "TypeError", "{seen}");
    assert_eq!(seen["visit"]["status"], 200, "{seen}");

    // The agent's side: the text/plain notify arrived with the browser's
    // Origin and was refused, the JSON one died at its preflight (refused
    // too), the address was refused; only the visit was stored.
    assert_eq!(rejected(&agent, "server_key_required").await, 2.0);
    assert_eq!(rejected(&agent, "contact_trait_refused").await, 1.0);
    assert_eq!(
        agent
            .metric("nudge_agent_events_received_total")
            .await
            .unwrap(),
        1.0
    );
    let events = stored_events(&control_plane, &user, 1).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["type"], "page", "{events:#?}");
}
