//! The analytics rollups over the real programs (README "Analytics"): an
//! engine config's `[analytics]` (a funnel, an outcome event, a cost per
//! in-app message) reaches the running control plane, and what an
//! application sends through the agent's Segment-shaped HTTP API is
//! folded into the reports while the program runs:
//!
//! * an anonymous visitor views product `p1` and adds it to the cart, then
//!   identifies as [`USER`] (the same `anonymousId`) and buys it; another
//!   user, [`OTHER`], views `p1`;
//! * a notify to each of them for an in-app type, one with a `cost`;
//! * last, the other user pays a bill (the configured outcome event).
//!
//! The figures are read back from `GET /v1/admin/analytics/{report}` (JSON
//! and CSV), `nudge.v1.Analytics/GetReport` (with `buf curl`, as the README
//! shows) and the control plane's `/metrics`, and checked exactly against
//! the README's rules: the visitor who identified is one person, resources
//! are named by `product_id`, funnel progress follows the visitor to the
//! user, and a notify's `cost` overrides the configured one.
//!
//! Needs `cargo build --bins` and `buf` (`scripts/test` installs it under
//! `.tools`); fails, never skips, without them.

// `support` is shared with `e2e.rs`; this binary uses only part of it.
#[allow(dead_code)]
mod support;

use std::time::Duration;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use nudge_e2e::metrics::metric_value;
use nudge_e2e::{Agent, ControlPlane};
use support::{installed_tool, setup, start_with_engine_config, wait_until_within};

/// The visitor's anonymous id, before and after they identify.
const VISITOR: &str = "anon-e2e-7f3a";
/// Who the visitor turns out to be.
const USER: &str = "u-e2e";
/// Another user, who only views the product.
const OTHER: &str = "u-e2e-other";
const PRODUCT: &str = "p1";
const TYPE: &str = "bill_reminder";

/// How long the rollups may take to show what was sent (the README says
/// about a second; generous, never a speed assertion).
const REPORT_LIMIT: Duration = Duration::from_secs(20);

/// An in-app type and the `[analytics]` section under test.
const ENGINE: &str = r#"
[types.bill_reminder]
channels = ["in_app"]

[types.bill_reminder.templates]
fallback = { title = "Your bill is due", text = "Please pay {{ data.bill }} on time." }

[analytics]
outcome_events = ["bill_paid_on_time"]

[analytics.cost_per_message]
in_app = "0.001"

[[analytics.funnels]]
name = "checkout"
steps = ["view", "cart_add", "purchase"]
"#;

/// Today as the reports name days: UTC.
fn today() -> Date {
    Timestamp::now().to_zoned(TimeZone::UTC).date()
}

/// Waits past midnight (UTC) when it is close, so that everything the test
/// sends falls on one day and `from=to=today` covers it.
async fn away_from_midnight() {
    let now = Timestamp::now();
    let midnight = today()
        .tomorrow()
        .unwrap()
        .to_zoned(TimeZone::UTC)
        .unwrap()
        .timestamp();
    let left = midnight.duration_since(now);
    if left < SignedDuration::from_mins(3) {
        let wait = left.unsigned_abs() + Duration::from_secs(1);
        eprintln!("waiting {wait:?} for the UTC day to change");
        tokio::time::sleep(wait).await;
    }
}

async fn post(agent: &Agent, path: &str, body: Value) {
    let reply = agent.post(path, &body).await.unwrap();
    assert!(reply.is_success(), "POST {path} {body}: {reply:?}");
}

/// `GET /v1/admin/analytics/{report}?{query}` as JSON.
async fn report(control_plane: &ControlPlane, report: &str, query: &str) -> Value {
    control_plane
        .admin_get(&format!("/v1/admin/analytics/{report}?{query}"))
        .await
        .unwrap()
}

/// The same with `format=csv`: the body as text.
async fn report_csv(control_plane: &ControlPlane, report: &str, query: &str) -> String {
    let url = format!(
        "http://{}/v1/admin/analytics/{report}?{query}&format=csv",
        control_plane.http
    );
    nudge_e2e::http::get_text(&nudge_e2e::http::client(), &url, Some(&setup().admin_token))
        .await
        .unwrap()
}

fn rows(report: &Value) -> &Vec<Value> {
    report["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("a report without rows: {report:#}"))
}

/// The sum of the samples of `name` carrying every label in `labels`
/// (`channel="in_app"`); `None` when there is none.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in metrics.lines().filter(|line| !line.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let Some((set, value)) = rest.split_once('}') else {
            continue;
        };
        let present: Vec<&str> = set.split(',').map(str::trim).collect();
        if labels.iter().all(|label| present.contains(label)) {
            let value: f64 = value.trim().parse().unwrap();
            found = Some(found.unwrap_or(0.0) + value);
        }
    }
    found
}

/// `buf curl` over plain HTTP/2 with the admin token; the answer as JSON.
fn grpc(control_plane: &ControlPlane, method: &str, body: &Value) -> Value {
    let buf = installed_tool(
        "NUDGE_TEST_BUF",
        ".tools/node_modules/.bin/buf",
        "@bufbuild/buf with npm",
    );
    let output = std::process::Command::new(&buf)
        .args(["curl", "--protocol", "grpc", "--http2-prior-knowledge"])
        .args([
            "-H",
            &format!("Authorization: Bearer {}", setup().admin_token),
        ])
        .args(["-d", &body.to_string()])
        .arg(format!("{}/{method}", control_plane.grpc_url()))
        .output()
        .expect("run buf curl");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "buf curl {method} {body} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_deliveries_are_rolled_up_as_they_arrive_with_the_configured_analytics() {
    let (control_plane, agent, _config) = start_with_engine_config(|_| ENGINE.to_owned()).await;
    away_from_midnight().await;
    let day = today();
    let range = format!("from={day}&to={day}");

    // The visitor browses anonymously, identifies, then buys as the user
    // (Segment's libraries send both ids after identify); another user
    // views the same product. No timestamps: the agent's receive time.
    let product = json!({"product_id": PRODUCT});
    post(
        &agent,
        "/v1/track",
        json!({"anonymousId": VISITOR, "event": "view", "properties": product}),
    )
    .await;
    post(
        &agent,
        "/v1/track",
        json!({"anonymousId": VISITOR, "event": "cart_add", "properties": product}),
    )
    .await;
    post(
        &agent,
        "/v1/identify",
        json!({"userId": USER, "anonymousId": VISITOR, "traits": {"name": "Ada"}}),
    )
    .await;
    post(
        &agent,
        "/v1/track",
        json!({
            "userId": USER,
            "anonymousId": VISITOR,
            "event": "purchase",
            "properties": {"product_id": PRODUCT, "order_id": "o-1"},
        }),
    )
    .await;
    post(
        &agent,
        "/v1/track",
        json!({"userId": OTHER, "event": "view", "properties": product}),
    )
    .await;
    // One notification with its own cost, one at the configured cost.
    post(
        &agent,
        "/v1/notify",
        json!({"userId": USER, "type": TYPE, "data": {"bill": "B-1"}, "cost": "0.25"}),
    )
    .await;
    post(
        &agent,
        "/v1/notify",
        json!({"userId": OTHER, "type": TYPE, "data": {"bill": "B-2"}}),
    )
    .await;
    // Track, track, identify, track, track, notify, notify.
    const SENT_EVENTS: u64 = 7;

    // Events reach the rollups while the program runs ...
    wait_until_within("the summary shows events", REPORT_LIMIT, || async {
        rows(&report(&control_plane, "summary", &range).await)
            .first()
            .is_some_and(|row| row["events"].as_i64().unwrap_or(0) > 0)
    })
    .await;
    // ... and, once all are stored and folded, the figures are exact.
    wait_until_within(
        "every stored event is folded into the rollups",
        REPORT_LIMIT,
        || async {
            let stored = control_plane.stored_count().await.unwrap();
            let metrics = control_plane.metrics().await.unwrap();
            let applied = metric_value(
                &metrics,
                "nudge_cp_analytics_applied_total",
                Some("source=\"events\""),
            )
            .unwrap_or(0.0);
            stored == SENT_EVENTS && applied >= stored as f64
        },
    )
    .await;

    // Summary: 4 activity calls (identify and notify are not activity);
    // the visitor who identified is one person with one session.
    let summary = report(&control_plane, "summary", &range).await;
    assert_eq!(
        summary["columns"],
        json!(["period", "events", "unique_users", "unique_sessions"]),
        "{summary:#}"
    );
    assert_eq!(
        summary["rows"],
        json!([{
            "period": day.to_string(),
            "events": 4,
            "unique_users": 2,
            "unique_sessions": 2,
        }]),
        "{summary:#}"
    );
    assert_eq!(summary["currency"], "USD", "{summary:#}");

    // Resources: named by product_id; the purchase carries it too.
    let resources = report(&control_plane, "resources", &range).await;
    assert_eq!(
        resources["rows"],
        json!([{
            "resource": PRODUCT,
            "view": 2,
            "click": 0,
            "favorite": 0,
            "unfavorite": 0,
            "cart_add": 1,
            "cart_remove": 0,
            "purchase": 1,
            "view_to_click": 0.0,
            "click_to_cart": null,
            "cart_to_purchase": 1.0,
        }]),
        "{resources:#}"
    );
    let actions = report(&control_plane, "resource_actions", &range).await;
    assert_eq!(
        actions["rows"],
        json!([
            {"resource": PRODUCT, "action": "view", "count": 2},
            {"resource": PRODUCT, "action": "cart_add", "count": 1},
            {"resource": PRODUCT, "action": "purchase", "count": 1},
        ]),
        "{actions:#}"
    );

    // Funnel: both users enter with a view; the visitor's cart_add moves
    // to the user, whose purchase finishes the pass.
    let funnels = report(
        &control_plane,
        "funnels",
        &format!("{range}&funnel=checkout"),
    )
    .await;
    assert_eq!(
        funnels["rows"],
        json!([
            {"funnel": "checkout", "step": 1, "event": "view", "users": 2,
             "conversion_from_previous": 1.0, "conversion_from_start": 1.0},
            {"funnel": "checkout", "step": 2, "event": "cart_add", "users": 1,
             "conversion_from_previous": 0.5, "conversion_from_start": 0.5},
            {"funnel": "checkout", "step": 3, "event": "purchase", "users": 1,
             "conversion_from_previous": 1.0, "conversion_from_start": 0.5},
        ]),
        "{funnels:#}"
    );

    // Users: the visitor's events and session became the user's; no
    // anonymous row is left.
    let users = report(&control_plane, "users", "").await;
    let users_rows = rows(&users);
    assert_eq!(users_rows.len(), 2, "{users:#}");
    let expected = [
        (USER, 3, "cart_add (1); purchase (1); view (1)"),
        (OTHER, 1, "view (1)"),
    ];
    for (row, (user, events, features)) in users_rows.iter().zip(expected) {
        assert_eq!(row["user"], user, "{users:#}");
        assert_eq!(row["events"], events, "{users:#}");
        assert_eq!(row["sessions"], 1, "{users:#}");
        assert_eq!(row["active_days"], 1, "{users:#}");
        assert_eq!(row["top_features"], features, "{users:#}");
    }

    // Delivery: both in-app messages sent; cost = the notify's 0.25 plus
    // the configured 0.001.
    let delivery_query = format!("{range}&granularity=total&channel=in_app");
    wait_until_within(
        "both in-app messages count as sent",
        REPORT_LIMIT,
        || async {
            rows(&report(&control_plane, "delivery", &delivery_query).await)
                .first()
                .is_some_and(|row| row["sent"] == 2)
        },
    )
    .await;
    let delivery = report(&control_plane, "delivery", &delivery_query).await;
    let delivery_rows = rows(&delivery);
    assert_eq!(delivery_rows.len(), 1, "{delivery:#}");
    let row = &delivery_rows[0];
    for (column, value) in [
        ("period", json!("total")),
        ("type", json!(TYPE)),
        ("channel", json!("in_app")),
        ("sent", json!(2)),
        ("failed", json!(0)),
        ("dead_lettered", json!(0)),
        ("cost", json!("0.251")),
        ("conversions", json!(0)),
        ("revenue", json!("0.00")),
    ] {
        assert_eq!(row[column], value, "{column} in {delivery:#}");
    }
    // Per user: the override applies to its own notification only.
    for (user, cost) in [(USER, "0.25"), (OTHER, "0.001")] {
        let mine = report(
            &control_plane,
            "delivery",
            &format!("{delivery_query}&user={user}"),
        )
        .await;
        let mine_rows = rows(&mine);
        assert_eq!(mine_rows.len(), 1, "{mine:#}");
        assert_eq!(mine_rows[0]["sent"], 1, "{user}: {mine:#}");
        assert_eq!(mine_rows[0]["cost"], cost, "{user}: {mine:#}");
    }
    let costs = report(
        &control_plane,
        "costs",
        &format!("{range}&granularity=total"),
    )
    .await;
    let costs_rows = rows(&costs);
    assert_eq!(costs_rows.len(), 1, "{costs:#}");
    assert_eq!(costs_rows[0]["provider"], "nudge", "{costs:#}");
    assert_eq!(costs_rows[0]["messages"], 2, "{costs:#}");
    assert_eq!(costs_rows[0]["cost"], "0.251", "{costs:#}");

    // CSV: the header is the JSON's columns, the rows its values.
    let csv = report_csv(&control_plane, "summary", &range).await;
    let columns: Vec<&str> = summary["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|column| column.as_str().unwrap())
        .collect();
    assert_eq!(csv, format!("{}\r\n{day},4,2,2\r\n", columns.join(",")));
    let delivery_csv = report_csv(&control_plane, "delivery", &delivery_query).await;
    let header = delivery_csv.split("\r\n").next().unwrap();
    let delivery_columns: Vec<&str> = delivery["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|column| column.as_str().unwrap())
        .collect();
    assert_eq!(header, delivery_columns.join(","), "{delivery_csv}");

    // gRPC: the same report, rows as strings, and the same CSV.
    let day_text = day.to_string();
    let answer = grpc(
        &control_plane,
        "nudge.v1.Analytics/GetReport",
        &json!({"report": "summary", "from": day_text, "to": day_text, "format": "csv"}),
    );
    assert_eq!(answer["report"], "summary", "{answer:#}");
    assert_eq!(answer["columns"], summary["columns"], "{answer:#}");
    assert_eq!(
        answer["rows"],
        json!([{"values": [day_text, "4", "2", "2"]}]),
        "{answer:#}"
    );
    assert_eq!(answer["csv"], csv, "{answer:#}");

    // Metrics: the cost counter and the worker's progress.
    let metrics = control_plane.metrics().await.unwrap();
    let cost = sample(
        &metrics,
        "nudge_cp_delivery_cost_total",
        &["channel=\"in_app\"", "provider=\"nudge\""],
    )
    .unwrap_or_else(|| panic!("no in-app cost in\n{metrics}"));
    assert!((cost - 0.251).abs() < 1e-9, "in-app cost {cost}");
    let applied = metric_value(
        &metrics,
        "nudge_cp_analytics_applied_total",
        Some("source=\"events\""),
    )
    .unwrap_or(0.0);
    assert!(applied > 0.0, "nothing applied:\n{metrics}");
    assert_eq!(applied, SENT_EVENTS as f64, "events applied");

    // The configured outcome event: counted with its amount, unattributed
    // (nobody opened, read or clicked a notification).
    post(
        &agent,
        "/v1/track",
        json!({"userId": OTHER, "event": "bill_paid_on_time", "properties": {"amount": "12.50"}}),
    )
    .await;
    wait_until_within("the outcome is counted", REPORT_LIMIT, || async {
        !rows(&report(&control_plane, "outcomes", &range).await).is_empty()
    })
    .await;
    let outcomes = report(&control_plane, "outcomes", &range).await;
    assert_eq!(
        outcomes["rows"],
        json!([{
            "period": day.to_string(),
            "outcome": "bill_paid_on_time",
            "attributed": "false",
            "type": null,
            "channel": null,
            "template": null,
            "count": 1,
            "amount": "12.50",
        }]),
        "{outcomes:#}"
    );
    let metrics = control_plane.metrics().await.unwrap();
    assert_eq!(
        sample(
            &metrics,
            "nudge_cp_outcomes_total",
            &["attributed=\"false\"", "channel=\"none\""],
        ),
        Some(1.0),
        "{metrics}"
    );
    let summary = report(&control_plane, "summary", &range).await;
    assert_eq!(summary["rows"][0]["events"], 5, "{summary:#}");
    assert_eq!(summary["rows"][0]["unique_users"], 2, "{summary:#}");
}
