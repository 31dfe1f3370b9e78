//! Reading a provider's HTTP answer, bounded: every HTTP channel (FCM and
//! its token endpoint, Web Push, SMS, webhooks) reads response bodies only
//! through [`read_capped`].
//!
//! # Promise
//!
//! At most [`MAX_ANSWER_BYTES`] of a body are read and kept, whatever the
//! peer sends or announces: a receiver (a webhook URL or a push endpoint is
//! chosen by whoever registered it) that answers a huge or endless body
//! costs 64 KiB and the time to read them, not memory and a worker until
//! the request timeout. The rest is never read; the connection is dropped
//! rather than reused.

/// What is read of an answer: provider answers that matter (JSON errors,
/// token grants, message resources) are a few hundred bytes.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The body of `response` as text (invalid UTF-8 replaced), cut at
/// [`MAX_ANSWER_BYTES`]. Fails only when reading the allowed part fails.
pub async fn read_capped(mut response: reqwest::Response) -> Result<String, reqwest::Error> {
    let announced = response.content_length().unwrap_or(0);
    // Trust the announced length only as far as the cap.
    let mut body = Vec::with_capacity(announced.min(MAX_ANSWER_BYTES as u64) as usize);
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_ANSWER_BYTES - body.len();
        if chunk.len() >= room {
            body.extend_from_slice(&chunk[..room]);
            break;
        }
        body.extend_from_slice(&chunk);
    }
    debug_assert!(body.len() <= MAX_ANSWER_BYTES);
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::compliance::EndlessAnswer;

    #[tokio::test]
    async fn an_endless_body_is_read_up_to_the_cap_and_no_further() {
        let peer = EndlessAnswer::start(200).await;
        let response = reqwest::get(peer.url("/anything")).await.unwrap();
        let text = read_capped(response).await.unwrap();
        assert_eq!(text.len(), MAX_ANSWER_BYTES);
        peer.assert_read_bounded().await;
    }

    #[tokio::test]
    async fn a_short_body_is_read_whole() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let app = axum::Router::new().route("/", axum::routing::get(|| async { "héllo" }));
            axum::serve(listener, app).await.unwrap();
        });
        let response = reqwest::get(format!("http://{addr}/")).await.unwrap();
        assert_eq!(read_capped(response).await.unwrap(), "héllo");
    }
}
