//! The chart's observability files against Prometheus' own tools and the
//! real programs: `helm/nudge/files/alerts.yaml` (alert rules),
//! `alerts.test.yaml` (their unit tests) and `dashboards/*.json` (Grafana).
//!
//! * `promtool check rules` and `promtool test rules` pass;
//! * every dashboard query parses (written as recording rules, checked by
//!   `promtool check rules`: Prometheus' parser), and the dashboards are
//!   well-formed Grafana models (schemaVersion, unique ids, gridPos);
//! * every metric name the alerts and dashboards use is one the real
//!   `nudge-agent` and `nudge-control-plane` export, after a little traffic
//!   (a tracked event that a rule turns into an in-app delivery, a bad
//!   intake request, a live-stream connection, a pass of the analytics
//!   worker), but for [`NOT_AT_START`];
//!   the analytics counters listed there are checked against
//!   [`ANALYTICS_METRICS_RS`] so the list cannot drift.
//!
//! Needs promtool (Debian package `prometheus`; `scripts/test` installs
//! it) and `cargo build --bins`; fails, never skips, without them.

#[allow(dead_code)]
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use nudge_control_plane::http::user_auth::UserTokenSecret;
use nudge_e2e::{Agent, ControlPlane};
use support::{setup, wait_until, workspace_dir};

/// The analytics rollups' metrics, defined in one file.
const ANALYTICS_METRICS_RS: &str = "control-plane/src/analytics/metrics.rs";

/// Why the analytics counters are in [`NOT_AT_START`]: they are labelled
/// (`*Vec`), so a name shows in a scrape only once a child exists, and the
/// test's one in-app delivery is neither engaged with nor followed by an
/// outcome (and has no configured cost). Not listed, as the test sees them:
/// `nudge_cp_analytics_backlog` (a plain gauge) and
/// `nudge_cp_analytics_applied_total` (every worker pass adds to both
/// sources, zero included).
const ANALYTICS_LABELLED: &str = "label children appear with the first engagement / outcome / sent message; the names are checked against control-plane/src/analytics/metrics.rs";

/// Metrics that only appear after events the test does not cause, and why.
const NOT_AT_START: &[(&str, &str)] = &[
    (
        "nudge_agent_ship_failures_total",
        "labelled by kind; a series only once an Ingest.Push failed",
    ),
    (
        "nudge_cp_dead_letters_total",
        "labelled by channel; a series only once a delivery ran out of attempts",
    ),
    ("nudge_agent_tls_reloads_total", "registered only with TLS"),
    ("nudge_agent_tls_reload_failing", "registered only with TLS"),
    ("nudge_cp_tls_reloads_total", "registered only with TLS"),
    ("nudge_cp_tls_reload_failing", "registered only with TLS"),
    (
        "nudge_cp_tls_handshake_failures_total",
        "registered only with TLS",
    ),
    ("nudge_cp_delivery_engagement_total", ANALYTICS_LABELLED),
    ("nudge_cp_outcomes_total", ANALYTICS_LABELLED),
    ("nudge_cp_outcome_amount_total", ANALYTICS_LABELLED),
    ("nudge_cp_delivery_cost_total", ANALYTICS_LABELLED),
];

const USER_TOKEN_SECRET: &str = "observability-user-token-secret-0123456789";

/// One rule, so that a tracked event becomes an in-app delivery.
const ENGINE: &str = r#"
[types.comment]
channels = ["in_app"]
category = "social"

[types.comment.templates]
fallback = { title = "{{ data.author }} commented", text = "{{ data.text }}" }

[[rules]]
name = "comment-posted"
on = "Comment Posted"
notify = "comment"
"#;

fn files() -> PathBuf {
    workspace_dir().join("helm/nudge/files")
}

fn promtool() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("promtool"))
                .find(|p| p.is_file())
        })
        .expect("promtool not found: install the Debian package `prometheus` (`scripts/test` does)")
}

fn run_promtool(args: &[&str], file: &Path) {
    let output = Command::new(promtool())
        .args(args)
        .arg(file)
        .current_dir(file.parent().unwrap())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "promtool {} {}:\n{}{}",
        args.join(" "),
        file.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn dashboards() -> Vec<(String, Value)> {
    let mut found: Vec<(String, Value)> = std::fs::read_dir(files().join("dashboards"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let dashboard = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            (path.display().to_string(), dashboard)
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!found.is_empty(), "no dashboards in files/dashboards");
    found
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            all.extend(nested);
        }
    }
    all
}

/// Grafana's variables replaced by what Prometheus can parse: the interval
/// ones by durations, the others (all used in `=~` matchers) by `.*`.
fn substitute(expr: &str) -> String {
    let mut text = expr
        .replace("$__rate_interval", "5m")
        .replace("${__rate_interval}", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h");
    let mut out = String::new();
    while let Some(at) = text.find('$') {
        out.push_str(&text[..at]);
        let rest = &text[at + 1..];
        let (name_len, skip) = if let Some(inner) = rest.strip_prefix('{') {
            let end = inner.find('}').expect("closed ${...}");
            (end, end + 2)
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (end, end)
        };
        assert!(name_len > 0, "a lone $ in {expr}");
        out.push_str(".*");
        text = rest[skip..].to_owned();
    }
    out.push_str(&text);
    out
}

/// Every `nudge_agent_*` / `nudge_cp_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in ["nudge_agent_", "nudge_cp_"] {
        let mut from = 0;
        while let Some(at) = text[from..].find(prefix) {
            let start = from + at;
            let before = text[..start].chars().last();
            let end = text[start..]
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .map_or(text.len(), |n| start + n);
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                names.insert(text[start..end].to_owned());
            }
            from = end;
        }
    }
    names
}

/// The sample names a scrape exposes: every family's name from its `# TYPE`
/// line, histograms' `_bucket`, `_sum` and `_count`.
fn exposed(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            names.insert(name.to_owned());
            if kind == "histogram" || kind == "summary" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    names
}

/// The analytics names [`NOT_AT_START`] excuses are the ones the control
/// plane defines: a renamed or removed metric fails here, not silently in
/// Grafana.
#[test]
fn allow_listed_analytics_metrics_are_defined_in_the_analytics_metrics() {
    let source = std::fs::read_to_string(workspace_dir().join(ANALYTICS_METRICS_RS))
        .unwrap_or_else(|e| panic!("{ANALYTICS_METRICS_RS}: {e}"));
    let listed: Vec<&str> = NOT_AT_START
        .iter()
        .filter(|(_, why)| *why == ANALYTICS_LABELLED)
        .map(|(name, _)| *name)
        .collect();
    assert!(!listed.is_empty(), "no analytics names in NOT_AT_START");
    for name in listed {
        assert!(
            source.contains(&format!("\"{name}\"")),
            "NOT_AT_START lists {name} as an analytics metric, which {ANALYTICS_METRICS_RS} does not define"
        );
    }
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    run_promtool(&["check", "rules"], &files().join("alerts.yaml"));
    run_promtool(&["test", "rules"], &files().join("alerts.test.yaml"));
}

#[test]
fn dashboards_are_grafana_models_whose_queries_prometheus_parses() {
    let mut rules = Vec::new();
    for (path, dashboard) in dashboards() {
        for field in ["title", "uid", "panels", "templating"] {
            assert!(!dashboard[field].is_null(), "{path} has no {field}");
        }
        let schema = dashboard["schemaVersion"].as_u64().unwrap_or(0);
        assert!(schema >= 38, "{path}: schemaVersion {schema} < 38");
        let variables: BTreeSet<&str> = dashboard["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        for needed in ["datasource", "instance"] {
            assert!(variables.contains(needed), "{path}: no ${needed} variable");
        }
        let mut ids = BTreeSet::new();
        for panel in panels(&dashboard) {
            let title = panel["title"].as_str().unwrap_or("?");
            let id = panel["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{path}: panel {title} has no id"));
            assert!(ids.insert(id), "{path}: panel id {id} twice");
            for key in ["h", "w", "x", "y"] {
                assert!(
                    panel["gridPos"][key].is_u64(),
                    "{path}: panel {title} has no gridPos.{key}"
                );
            }
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    rules.push(json!({
                        "record": format!("dashboard:panel_{id}:{}", target["refId"].as_str().unwrap_or("A")),
                        "expr": substitute(expr),
                    }));
                }
            }
        }
    }
    assert!(
        rules.len() > 10,
        "too few dashboard queries: {}",
        rules.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-queries.yaml");
    // JSON is YAML: promtool reads it.
    let groups = json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&file, serde_json::to_string_pretty(&groups).unwrap()).unwrap();
    run_promtool(&["check", "rules"], &file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_dashboards_use_only_metrics_the_programs_export() {
    let config = tempfile::tempdir().unwrap();
    let engine = config.path().join("nudge.toml");
    std::fs::write(&engine, ENGINE).unwrap();
    let mut control_plane = ControlPlane::new(setup()).unwrap().with_env([
        ("NUDGE_CP_CONFIG", engine.to_str().unwrap()),
        ("NUDGE_CP_USER_TOKEN_SECRET", USER_TOKEN_SECRET),
    ]);
    control_plane.start().await.unwrap();
    let agent = Agent::started(setup(), &control_plane.grpc_url(), &[])
        .await
        .unwrap();

    // A live stream (nudge_cp_live_*), a tracked event that the rule turns
    // into an in-app delivery (shipping, ingest, notifications, deliveries),
    // and a refused intake request (nudge_agent_requests_rejected_total).
    let secret: UserTokenSecret = USER_TOKEN_SECRET.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = secret.sign(&json!({"sub": "obs-user", "exp": now + 3600}));
    let (_socket, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/v1/me/stream?access_token={token}",
        control_plane.http
    ))
    .await
    .unwrap();
    let reply = agent
        .post(
            "/v1/track",
            &json!({
                "userId": "obs-user",
                "event": "Comment Posted",
                "messageId": "obs-comment-1",
                "properties": {"author": "Ada", "text": "Nice"},
            }),
        )
        .await
        .unwrap();
    assert!(reply.is_success(), "track: {reply:?}");
    let bad = agent.post("/v1/track", &json!({"event": 1})).await.unwrap();
    assert!(!bad.is_success(), "an invalid track is refused: {bad:?}");
    wait_until("the in-app delivery is counted", || async {
        control_plane
            .metrics()
            .await
            .unwrap()
            .contains("nudge_cp_deliveries_total{")
    })
    .await;
    wait_until("the analytics worker made a pass", || async {
        control_plane
            .metrics()
            .await
            .unwrap()
            .contains("nudge_cp_analytics_applied_total{")
    })
    .await;

    let mut exported = exposed(&agent.metrics().await.unwrap());
    exported.extend(exposed(&control_plane.metrics().await.unwrap()));

    let mut sources = vec![files().join("alerts.yaml")];
    sources.extend(
        dashboards()
            .into_iter()
            .map(|(path, _)| PathBuf::from(path)),
    );
    let mut missing = Vec::new();
    for source in &sources {
        let text = std::fs::read_to_string(source).unwrap();
        for name in metric_names(&text) {
            if !exported.contains(&name) && !NOT_AT_START.iter().any(|(n, _)| *n == name) {
                missing.push(format!("{}: {name}", source.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "used but not exported by the running programs:\n{}\nexported: {exported:?}",
        missing.join("\n")
    );
    // The allow-list holds only names the programs define.
    for (name, why) in NOT_AT_START {
        let defined = [
            "agent/src/metrics.rs",
            "agent/src/grpc/tls.rs",
            "control-plane/src/delivery/metrics.rs",
            "control-plane/src/grpc/tls.rs",
            ANALYTICS_METRICS_RS,
        ]
        .iter()
        .any(|file| {
            std::fs::read_to_string(workspace_dir().join(file))
                .unwrap()
                .contains(&format!("\"{name}\""))
        });
        assert!(
            defined,
            "NOT_AT_START lists {name} ({why}), which no program defines"
        );
    }
}
