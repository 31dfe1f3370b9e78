//! [`spawn`] and [`ChunkSink`]: a document written piece by piece into a
//! short queue of chunks, for a response body that is sent while it is
//! produced (the privacy export, the inbox and activity exports).
//!
//! # Promises
//!
//! * **Bounded memory, whatever the document's size.** The writer fills
//!   one chunk (it flushes after each page it read from storage) and the
//!   queue holds at most [`QUEUED`] chunks: a writer whose reader is
//!   behind waits at its next flush.
//! * **A failure is never a short document that looks complete.** When the
//!   writer fails, the stream ends with an error item instead of the
//!   document's remaining bytes: an HTTP body built on it is aborted (the
//!   connection closes without the chunked encoding's last chunk), so the
//!   client sees an error, not a truncated JSON or CSV file.
//! * **A reader that goes away stops the writer**: its next flush answers
//!   [`StreamError::Gone`], and nothing more is read from storage.

use std::fmt;
use std::future::Future;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;

/// Chunks waiting for the reader at most.
pub const QUEUED: usize = 2;

/// Why a document's stream ended before its end.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StreamError {
    /// The reader went away (the client disconnected).
    #[error("the reader of the stream went away")]
    Gone,
    /// Reading what the document holds failed.
    #[error("{0}")]
    Source(String),
}

impl StreamError {
    /// A failure of whatever the document is read from.
    pub fn source(error: impl fmt::Display) -> Self {
        StreamError::Source(error.to_string())
    }
}

/// The item a stream ends with when its writer failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the document was aborted: {0}")]
pub struct Aborted(pub String);

/// Where a writer puts the document.
#[derive(Debug)]
pub struct ChunkSink {
    chunk: Vec<u8>,
    queue: mpsc::Sender<Result<Bytes, Aborted>>,
}

impl ChunkSink {
    /// Appends `bytes` to the chunk being filled.
    pub fn write(&mut self, bytes: &[u8]) {
        self.chunk.extend_from_slice(bytes);
    }

    /// Appends `value` as compact JSON.
    pub fn write_json<T: serde::Serialize + ?Sized>(
        &mut self,
        value: &T,
    ) -> Result<(), StreamError> {
        serde_json::to_writer(&mut self.chunk, value).map_err(StreamError::source)
    }

    /// Hands the chunk filled so far to the reader (nothing when it is
    /// empty), waiting while the queue is full.
    pub async fn flush(&mut self) -> Result<(), StreamError> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.chunk));
        self.queue
            .send(Ok(chunk))
            .await
            .map_err(|_| StreamError::Gone)
    }
}

/// What [`spawn`] hands the reader: the document's chunks, then its end,
/// or an [`Aborted`] item when the writer failed.
#[derive(Debug)]
pub struct Chunks {
    queue: mpsc::Receiver<Result<Bytes, Aborted>>,
}

impl Chunks {
    /// The next chunk; `None` at the document's end.
    pub async fn next(&mut self) -> Option<Result<Bytes, Aborted>> {
        self.queue.recv().await
    }

    /// The rest of the chunks as a stream.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, Aborted>> + Send + 'static {
        futures::stream::unfold(self, |mut chunks| async move {
            chunks.next().await.map(|item| (item, chunks))
        })
    }
}

/// Runs the writer `write` on its own task and answers its chunks. What
/// the writer leaves unflushed when it returns `Ok` is flushed for it; an
/// `Err` ends the chunks with [`Aborted`] (see the module doc).
pub fn spawn<W, F>(write: W) -> Chunks
where
    W: FnOnce(ChunkSink) -> F,
    F: Future<Output = Result<ChunkSink, StreamError>> + Send + 'static,
{
    let (sender, queue) = mpsc::channel(QUEUED);
    let sink = ChunkSink {
        chunk: Vec::new(),
        queue: sender.clone(),
    };
    let writing = write(sink);
    tokio::spawn(async move {
        let failed = match writing.await {
            Ok(mut sink) => sink.flush().await.err(),
            Err(error) => Some(error),
        };
        match failed {
            None | Some(StreamError::Gone) => {}
            Some(StreamError::Source(reason)) => {
                tracing::warn!(%reason, "a streamed document was aborted");
                // The reader may be gone too; then there is no one to tell.
                let _ = sender.send(Err(Aborted(reason))).await;
            }
        }
    });
    Chunks { queue }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_arrive_as_flushed_and_a_failure_ends_them_with_an_error() {
        let mut chunks = spawn(|mut sink| async move {
            sink.write(b"[1");
            sink.flush().await?;
            sink.write(b",2");
            Ok(sink)
        });
        assert_eq!(chunks.next().await.unwrap().unwrap(), Bytes::from("[1"));
        assert_eq!(chunks.next().await.unwrap().unwrap(), Bytes::from(",2"));
        assert!(chunks.next().await.is_none());

        let mut chunks = spawn(|mut sink| async move {
            sink.write(b"[1");
            sink.flush().await?;
            sink.write(b",2");
            Err::<ChunkSink, _>(StreamError::source("the store went away"))
        });
        assert_eq!(chunks.next().await.unwrap().unwrap(), Bytes::from("[1"));
        let error = chunks.next().await.unwrap().unwrap_err();
        assert!(error.to_string().contains("the store went away"), "{error}");
        assert!(chunks.next().await.is_none(), "nothing after the error");
    }

    #[tokio::test]
    async fn a_reader_that_goes_away_stops_the_writer() {
        let (done, finished) = tokio::sync::oneshot::channel();
        let chunks = spawn(|mut sink| async move {
            let mut flushed = 0;
            let outcome = loop {
                sink.write(b"x");
                if let Err(error) = sink.flush().await {
                    break error;
                }
                flushed += 1;
            };
            let _ = done.send((flushed, outcome));
            Ok(sink)
        });
        drop(chunks);
        let (flushed, outcome) = finished.await.unwrap();
        assert!(matches!(outcome, StreamError::Gone), "{outcome}");
        assert!(flushed <= QUEUED, "{flushed} chunks queued for no reader");
    }
}
