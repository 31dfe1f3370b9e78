//! The harness's own HTTP requests (readiness, metrics, the admin API, the
//! tests' calls to the intake). Promises: plain HTTP with bounded waits, and
//! answers read whole: a [`Reply`] keeps the status, `Retry-After` and the
//! body as JSON (or as a JSON string when it is not JSON).
//!
//! Not for measuring: `bench::load` has its own connection-level client.

use std::time::Duration;

use serde_json::Value;

use crate::Error;

/// A client with bounded waits and a pool large enough for the tests' many
/// concurrent clients.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

/// What a program answered.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Value,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The error body's `code` (Segment's error shape).
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
}

pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
) -> Result<Reply, reqwest::Error> {
    post_bytes(
        client,
        url,
        "application/json",
        serde_json::to_vec(body).unwrap(),
    )
    .await
}

pub async fn post_bytes(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<Reply, reqwest::Error> {
    let reply = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await?;
    let status = reply.status().as_u16();
    let retry_after = reply
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap_or("<not ascii>").to_owned());
    let text = reply.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Reply {
        status,
        retry_after,
        body,
    })
}

/// The body of a `GET` that must answer 2xx; `token` is sent as a bearer.
pub async fn get_text(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> Result<String, Error> {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let reply = request
        .send()
        .await
        .map_err(|e| Error::new(format!("GET {url}: {e}")))?;
    let status = reply.status();
    let body = reply.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(Error::new(format!("GET {url}: {status}: {body}")));
    }
    Ok(body)
}

/// [`get_text`], parsed as JSON.
pub async fn get_json(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> Result<Value, Error> {
    let body = get_text(client, url, token).await?;
    serde_json::from_str(&body)
        .map_err(|e| Error::new(format!("GET {url}: not JSON ({e}): {body}")))
}
