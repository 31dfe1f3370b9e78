//! Issue 16 over the real programs: `nudge-control-plane` configured by an
//! engine TOML file, and `nudge-agent` in front of it as an application
//! uses them.
//!
//! * **Localized templates and plurals**: a user identified with
//!   `locale: de-AT` gets the `de` template (the fallback chain), worded by
//!   German plural rules; a user without a locale gets the type's own.
//! * **Throttling**: a type throttled to two an hour lets two of three
//!   notifies through; the third is created, not delivered, and the admin
//!   API and the metrics say it was dropped by the throttle.
//! * **Dates and money in the user's locale and zone**: an invoice due at
//!   08:30 UTC reads `1 234,50 EUR due 07.12.2026, 09:30` (CLDR groups
//!   Austrian thousands with a no-break space) for the de-AT
//!   user whose preferences say Europe/Vienna, and `1,234.50 EUR due Dec
//!   7, 2026, 8:30 AM` for a user with neither.

// `support` is shared with `e2e.rs`; this binary uses only part of it.
#[allow(dead_code)]
mod support;

use serde_json::{Value, json};

use nudge_e2e::{Agent, ControlPlane};
use support::{start_with_engine_config, wait_until};

const ENGINE: &str = r#"
[types.comment]
channels = ["in_app"]
category = "social"

[types.comment.templates]
fallback = { title = "{{ data.n | plural(one='# new comment', other='# new comments') }}" }

[types.comment.templates.locales.de]
fallback = { title = "{{ data.n | plural(one='# neuer Kommentar', other='# neue Kommentare') }} ({{ locale }})" }

[types.comment.throttle]
limit = 2
window = "1h"

[types.invoice]
channels = ["in_app"]

[types.invoice.templates]
fallback = { title = "{{ data.amount | money('EUR') }} due {{ data.due | date }}, {{ data.due | time }}" }
"#;

async fn post(agent: &Agent, path: &str, body: Value) {
    let reply = agent.post(path, &body).await.unwrap();
    assert!(reply.is_success(), "POST {path} {body}: {reply:?}");
}

/// The user's notifications, once there are `count`.
async fn notifications(control_plane: &ControlPlane, user: &str, count: usize) -> Vec<Value> {
    wait_until(&format!("{count} notifications of {user}"), || async {
        control_plane.notifications(user).await.unwrap().len() == count
    })
    .await;
    control_plane.notifications(user).await.unwrap()
}

/// The in-app title of `notification`'s delivery, once it is planned.
async fn in_app_title(control_plane: &ControlPlane, notification: &Value) -> String {
    let id = notification["id"].as_str().unwrap();
    wait_until("the in-app delivery", || async {
        !control_plane.deliveries(id).await.unwrap().is_empty()
    })
    .await;
    let deliveries = control_plane.deliveries(id).await.unwrap();
    deliveries[0]["message"]["subject"]
        .as_str()
        .unwrap_or_else(|| panic!("{deliveries:#?}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localized_plural_templates_and_a_throttle_in_the_real_programs() {
    let (control_plane, agent, _config) = start_with_engine_config(|_| ENGINE.to_owned()).await;
    post(
        &agent,
        "/v1/identify",
        json!({"userId": "anna", "traits": {"name": "Anna", "locale": "de-AT"}}),
    )
    .await;
    // The profile is stored before the notifies are planned: the agent
    // ships in order, and the engine plans in ingest order.
    for (user, n) in [("anna", 1), ("anna", 3), ("ben", 1)] {
        post(
            &agent,
            "/v1/notify",
            json!({"userId": user, "type": "comment", "data": {"n": n}}),
        )
        .await;
    }
    let mut titles = Vec::new();
    for notification in notifications(&control_plane, "anna", 2).await {
        titles.push(in_app_title(&control_plane, &notification).await);
    }
    titles.sort();
    assert_eq!(
        titles,
        ["1 neuer Kommentar (de-AT)", "3 neue Kommentare (de-AT)"]
    );
    let ben = notifications(&control_plane, "ben", 1).await;
    assert_eq!(in_app_title(&control_plane, &ben[0]).await, "1 new comment");

    // Anna's third comment in the hour: over the throttle of two.
    post(
        &agent,
        "/v1/notify",
        json!({"userId": "anna", "type": "comment", "data": {"n": 5}}),
    )
    .await;
    let all = notifications(&control_plane, "anna", 3).await;
    let third = all
        .iter()
        .find(|n| n["data"]["n"] == 5)
        .unwrap_or_else(|| panic!("{all:#?}"));
    let id = third["id"].as_str().unwrap();
    let detail = control_plane
        .admin_get(&format!("/v1/admin/notifications/{id}"))
        .await
        .unwrap();
    assert_eq!(detail["deliveries"], json!([]), "{detail:#}");
    assert_eq!(detail["throttle"][0]["outcome"], "dropped", "{detail:#}");
    assert_eq!(detail["throttle"][0]["scope"], "type:comment", "{detail:#}");
    let metrics = control_plane.metrics().await.unwrap();
    assert!(
        metrics.contains(
            "nudge_cp_notifications_throttled_total{outcome=\"dropped\",type=\"comment\"} 1"
        ),
        "{metrics}"
    );

    // An invoice: Anna's preferences put her in Vienna.
    let (status, body) = control_plane
        .admin_put(
            "/v1/admin/users/anna/preferences",
            &json!({"timezone": "Europe/Vienna"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    for user in ["anna", "ben"] {
        post(
            &agent,
            "/v1/notify",
            json!({"userId": user, "type": "invoice",
                   "data": {"amount": 1234.5, "due": "2026-12-07T08:30:00Z"}}),
        )
        .await;
    }
    let invoice_of = |all: Vec<Value>| {
        all.into_iter()
            .find(|n| n["notification_type"] == "invoice")
            .unwrap_or_else(|| panic!("no invoice"))
    };
    let anna = invoice_of(notifications(&control_plane, "anna", 4).await);
    assert_eq!(
        in_app_title(&control_plane, &anna).await,
        "1\u{a0}234,50 EUR due 07.12.2026, 09:30"
    );
    let ben = invoice_of(notifications(&control_plane, "ben", 2).await);
    assert_eq!(
        in_app_title(&control_plane, &ben).await,
        "1,234.50 EUR due Dec 7, 2026, 8:30\u{202f}AM"
    );
}
