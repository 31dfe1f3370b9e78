//! Topics and broadcasts (issue 16, item 4) over the real programs, on
//! embedded SQLite and on PostgreSQL: users join a topic by a tracked
//! event (a subscription rule) or through the admin API, and leave it
//! through their own `/v1/me/topics`; a broadcast to the topic lands in
//! the inbox of every subscriber and of no one else, with its progress
//! shown by the admin API; a segment broadcast reaches the users whose
//! traits match; a scheduled broadcast cancelled before its time reaches
//! no one; and refusals (a bad body, an id reused with other content)
//! change nothing. Every answer is checked against `openapi.json`.

// `support` is shared with `e2e.rs`; this binary uses only part of it.
#[allow(dead_code)]
mod support;

use reqwest::Method;
use serde_json::{Value, json};

use nudge_control_plane::http::user_auth::UserTokenSecret;
use nudge_e2e::{Agent, ControlPlane};
use support::{setup, wait_until};

const USER_TOKEN_SECRET: &str = "broadcast-e2e-user-token-secret-0123456789abcdef";

const ENGINE: &str = r#"
[types.announcement]
channels = ["in_app"]

[[subscriptions]]
on = "project_joined"
topic = "project:{project_id}"
"#;

struct Stack {
    control_plane: ControlPlane,
    agent: Agent,
    _config: tempfile::TempDir,
}

impl Stack {
    async fn start_on(database_url: Option<&str>) -> Self {
        let config = tempfile::tempdir().unwrap();
        let path = config.path().join("nudge.toml");
        std::fs::write(&path, ENGINE).unwrap();
        let mut control_plane = ControlPlane::new(setup()).unwrap().with_env([
            ("NUDGE_CP_CONFIG", path.to_str().unwrap()),
            ("NUDGE_CP_USER_TOKEN_SECRET", USER_TOKEN_SECRET),
        ]);
        if let Some(url) = database_url {
            control_plane = control_plane.with_env([("NUDGE_CP_DATABASE_URL", url)]);
        }
        control_plane.start().await.unwrap();
        let agent = Agent::started(setup(), &control_plane.grpc_url(), &[])
            .await
            .unwrap();
        Stack {
            control_plane,
            agent,
            _config: config,
        }
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.control_plane
            .admin_send(method, path, body.as_ref())
            .await
            .unwrap()
    }

    /// `/v1/me/...` as `user`: the status and the answer (JSON or null).
    async fn me(&self, user: &str, method: Method, path: &str) -> (u16, Value) {
        let (status, text) = self
            .control_plane
            .send_as(Some(&token(user)), method, path, None)
            .await
            .unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post_agent(&self, path: &str, body: Value) {
        let reply = self.agent.post(path, &body).await.unwrap();
        assert!(reply.is_success(), "POST {path} {body}: {reply:?}");
    }

    /// The titles in `user`'s inbox.
    async fn inbox(&self, user: &str) -> Vec<String> {
        let (status, page) = self.me(user, Method::GET, "/v1/me/notifications").await;
        assert_eq!(status, 200, "{page}");
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["title"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// The broadcast once its state is `state`.
    async fn broadcast_in(&self, id: &str, state: &str) -> Value {
        let path = format!("/v1/admin/broadcasts/{id}");
        wait_until(&format!("broadcast {id} is {state}"), || async {
            self.admin(Method::GET, &path, None).await.1["state"] == state
        })
        .await;
        self.admin(Method::GET, &path, None).await.1
    }
}

/// A token of `user`, signed as the application's backend would.
fn token(user: &str) -> String {
    let secret: UserTokenSecret = USER_TOKEN_SECRET.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    secret.sign(&json!({"sub": user, "exp": now + 3600}))
}

async fn topics_and_broadcasts(database_url: Option<&str>) {
    let stack = Stack::start_on(database_url).await;
    // Two users join project 7 by a tracked event, one through the API;
    // `dora` joins and then leaves; `eve` follows nothing.
    for user in ["ana", "ben", "dora"] {
        stack
            .post_agent(
                "/v1/track",
                json!({"userId": user, "event": "project_joined", "properties": {"project_id": 7}}),
            )
            .await;
    }
    let (status, body) = stack
        .admin(
            Method::PUT,
            "/v1/admin/topics/project:7/subscribers/cy",
            None,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = stack
        .admin(
            Method::PUT,
            "/v1/admin/topics/project:7/subscribers/cy",
            None,
        )
        .await;
    assert_eq!(status, 200, "already subscribed");
    stack
        .post_agent(
            "/v1/identify",
            json!({"userId": "eve", "traits": {"plan": "pro"}}),
        )
        .await;
    stack
        .post_agent(
            "/v1/identify",
            json!({"userId": "ana", "traits": {"plan": "pro"}}),
        )
        .await;
    wait_until("the rule subscribed three users", || async {
        stack
            .admin(Method::GET, "/v1/admin/topics/project:7/subscribers", None)
            .await
            .1["total"]
            == 4
    })
    .await;
    let (status, mine) = stack.me("dora", Method::GET, "/v1/me/topics").await;
    assert_eq!(status, 200);
    assert_eq!(mine["topics"][0]["topic"], "project:7", "{mine}");
    let (status, _) = stack
        .me("dora", Method::DELETE, "/v1/me/topics/project:7")
        .await;
    assert_eq!(status, 204);
    let (status, _) = stack
        .me("dora", Method::DELETE, "/v1/me/topics/project:7")
        .await;
    assert_eq!(status, 404, "not subscribed any more");

    // Refusals change nothing.
    let bad = json!({"id": "bad id", "type": "announcement", "audience": {"topic": "project:7"}});
    let (status, body) = stack
        .admin(Method::POST, "/v1/admin/broadcasts", Some(bad))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("id"),
        "{body}"
    );
    let no_audience = json!({"id": "b0", "type": "announcement", "audience": {"segment": {}}});
    let (status, body) = stack
        .admin(Method::POST, "/v1/admin/broadcasts", Some(no_audience))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        stack
            .admin(Method::GET, "/v1/admin/broadcasts/b0", None)
            .await
            .0,
        404
    );

    // A broadcast to the topic: its three subscribers, no one else.
    let release = json!({
        "id": "release-7", "type": "announcement", "title": "Project 7 released",
        "channels": ["in_app"], "audience": {"topic": "project:7"},
    });
    let (status, created) = stack
        .admin(Method::POST, "/v1/admin/broadcasts", Some(release.clone()))
        .await;
    assert_eq!(status, 201, "{created}");
    let done = stack.broadcast_in("release-7", "done").await;
    assert_eq!(
        (done["recipients"].as_u64(), done["notifications"].as_u64()),
        (Some(3), Some(3)),
        "{done}"
    );
    for user in ["ana", "ben", "cy"] {
        wait_until(&format!("{user}'s inbox has the release"), || async {
            stack.inbox(user).await == ["Project 7 released"]
        })
        .await;
    }
    assert!(stack.inbox("dora").await.is_empty(), "dora left the topic");
    assert!(stack.inbox("eve").await.is_empty(), "eve never joined");
    // The same id and content again: the first, with its progress.
    let (status, again) = stack
        .admin(Method::POST, "/v1/admin/broadcasts", Some(release))
        .await;
    assert_eq!((status, &again["state"]), (200, &json!("done")), "{again}");
    let changed = json!({
        "id": "release-7", "type": "announcement", "title": "Other words",
        "audience": {"topic": "project:7"},
    });
    let (status, body) = stack
        .admin(Method::POST, "/v1/admin/broadcasts", Some(changed))
        .await;
    assert_eq!(status, 409, "{body}");
    // Done, it can still be cancelled (recalling what is held: nothing
    // here, everyone got it), once.
    let (status, body) = stack
        .admin(Method::POST, "/v1/admin/broadcasts/release-7/cancel", None)
        .await;
    assert_eq!(
        (status, &body["state"]),
        (200, &json!("cancelled")),
        "{body}"
    );
    assert_eq!(body["recipients"], done["recipients"], "{body}");
    let (status, body) = stack
        .admin(Method::POST, "/v1/admin/broadcasts/release-7/cancel", None)
        .await;
    assert_eq!(status, 409, "cancelled twice: {body}");

    // A segment: users whose `plan` trait is `pro` (ana and eve).
    let pro = json!({
        "id": "pro-offer", "type": "announcement", "title": "For pro users",
        "audience": {"segment": {"traits": [{"property": "plan", "op": "eq", "value": "pro"}]}},
    });
    let (status, body) = stack
        .admin(Method::POST, "/v1/admin/broadcasts", Some(pro))
        .await;
    assert_eq!(status, 201, "{body}");
    let done = stack.broadcast_in("pro-offer", "done").await;
    assert_eq!(done["recipients"], 2, "{done}");
    for user in ["ana", "eve"] {
        wait_until(&format!("{user}'s inbox has the offer"), || async {
            stack
                .inbox(user)
                .await
                .contains(&"For pro users".to_owned())
        })
        .await;
    }
    assert_eq!(stack.inbox("ben").await, ["Project 7 released"]);

    // Scheduled an hour ahead and cancelled: nobody hears of it.
    let later = json!({
        "id": "later", "type": "announcement", "title": "Later",
        "audience": {"topic": "project:7"},
        "send_at": jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_hours(1)).unwrap().to_string(),
    });
    let (status, body) = stack
        .admin(Method::POST, "/v1/admin/broadcasts", Some(later))
        .await;
    assert_eq!(
        (status, &body["state"]),
        (201, &json!("scheduled")),
        "{body}"
    );
    let (status, body) = stack
        .admin(Method::POST, "/v1/admin/broadcasts/later/cancel", None)
        .await;
    assert_eq!(
        (status, &body["state"]),
        (200, &json!("cancelled")),
        "{body}"
    );
    let (_, list) = stack
        .admin(Method::GET, "/v1/admin/broadcasts?limit=2", None)
        .await;
    let ids: Vec<&str> = list["broadcasts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["later", "pro-offer"], "newest first");
    assert!(list["next"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_broadcasts_on_sqlite() {
    topics_and_broadcasts(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_broadcasts_on_postgres() {
    let url = nudge_e2e::postgres::fresh_database().await;
    topics_and_broadcasts(Some(&url)).await;
}
