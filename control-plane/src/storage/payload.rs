//! The stored form of an event (`events.payload`): its JSON, deflated.
//!
//! # Promises
//!
//! * [`encode`] writes one tag byte, [`DEFLATED`], then the event's JSON
//!   as a raw deflate stream (about 30 % smaller for a typical 500-byte
//!   track event, which neither engine compresses by itself: PostgreSQL
//!   compresses only values of about 2 KB and more). Level 1 of the
//!   zlib-rs backend (the workspace turns on flate2's `zlib-rs`): its
//!   quick strategy codes with deflate's fixed Huffman table, so neither
//!   side builds a table per event; an event is inflated by each reader
//!   (the engine, analytics), and table building was the largest part of
//!   the control plane's compression CPU with miniz_oxide's dynamic
//!   tables (README, storage benchmark).
//! * [`decode`] reads that form and plain JSON (what builds before it
//!   stored, which starts with `{`), so stored events stay readable
//!   without a rewrite.
//! * A payload in neither form, or one that inflates to more than
//!   [`MAX_JSON_BYTES`], is [`StorageError::Corrupt`], never a panic.
//! * The compressor and decompressor are kept per thread (their state
//!   is hundreds of KB: making one per event would cost more than the
//!   compression).

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::StorageError;
use crate::event::Event;

/// The tag of a deflated payload (JSON never starts with a NUL byte).
pub const DEFLATED: u8 = 0;
/// The most a payload may inflate to: far above any event ingest accepts
/// (a gRPC batch is at most a few MB).
pub const MAX_JSON_BYTES: usize = 64 << 20;

thread_local! {
    static COMPRESSOR: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
    static DECOMPRESSOR: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// The stored form of `event`.
pub fn encode(event: &Event) -> Result<Vec<u8>, StorageError> {
    let json = serde_json::to_vec(event)?;
    COMPRESSOR.with_borrow_mut(|compressor| {
        compressor.reset();
        let mut out = Vec::with_capacity(1 + json.len() / 2 + 64);
        out.push(DEFLATED);
        // Level 1 codes with deflate's fixed Huffman table, in which a
        // byte of 144 or more takes 9 bits: text that does not compress
        // (non-Latin scripts, say) comes out up to 1/8 larger than it went
        // in. So the output grows until the stream ends, bounded by
        // what such input can take.
        let bound = json.len() + json.len() / 4 + 1024;
        loop {
            let consumed = usize::try_from(compressor.total_in()).unwrap_or(usize::MAX);
            let status = compressor
                .compress_vec(&json[consumed..], &mut out, FlushCompress::Finish)
                .map_err(|error| StorageError::Corrupt(format!("deflate: {error}")))?;
            if status == Status::StreamEnd {
                return Ok(out);
            }
            if out.len() > bound {
                return Err(StorageError::Corrupt(
                    "deflate: the output outgrew its worst-case bound".to_owned(),
                ));
            }
            out.reserve(out.capacity().max(256));
        }
    })
}

/// The event stored as `payload`.
pub fn decode(payload: &[u8]) -> Result<Event, StorageError> {
    match payload.split_first() {
        Some((&DEFLATED, deflated)) => {
            let json = inflate(deflated)?;
            Ok(serde_json::from_slice(&json)?)
        }
        Some((b'{', _)) => Ok(serde_json::from_slice(payload)?),
        _ => Err(StorageError::Corrupt(
            "an event payload that is neither deflated nor JSON".to_owned(),
        )),
    }
}

fn inflate(deflated: &[u8]) -> Result<Vec<u8>, StorageError> {
    DECOMPRESSOR.with_borrow_mut(|decompressor| {
        decompressor.reset(false);
        let mut json = Vec::with_capacity(deflated.len() * 3);
        loop {
            let (read, written) = (decompressor.total_in(), decompressor.total_out());
            let consumed = usize::try_from(read).unwrap_or(usize::MAX);
            let status = decompressor
                .decompress_vec(&deflated[consumed..], &mut json, FlushDecompress::None)
                .map_err(|error| StorageError::Corrupt(format!("inflate: {error}")))?;
            if status == Status::StreamEnd {
                return Ok(json);
            }
            if json.len() >= MAX_JSON_BYTES {
                return Err(StorageError::Corrupt(format!(
                    "an event payload inflates to more than {MAX_JSON_BYTES} bytes"
                )));
            }
            let progress = decompressor.total_in() > read || decompressor.total_out() > written;
            if !progress && json.len() < json.capacity() {
                // Room to write and nothing left to read: the stream ends
                // early.
                return Err(StorageError::Corrupt(
                    "an event payload's deflate stream is cut short".to_owned(),
                ));
            }
            json.reserve(json.capacity().max(256));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventBody, JsonObject};

    fn event(properties: serde_json::Value) -> Event {
        let serde_json::Value::Object(properties) = properties else {
            unreachable!()
        };
        Event {
            id: "e1".to_owned(),
            user_id: Some("u1".to_owned()),
            anonymous_id: None,
            timestamp: None,
            sent_at: None,
            received_at: None,
            ingested_at: jiff::Timestamp::from_second(1_700_000_000).unwrap(),
            agent_id: "agent".to_owned(),
            write_key: None,
            context: JsonObject::new(),
            integrations: JsonObject::new(),
            body: EventBody::Track {
                event: "Order Completed".to_owned(),
                properties,
            },
        }
    }

    #[test]
    fn events_round_trip_deflated_and_smaller() {
        let typical = event(serde_json::json!({
            "orderId": "ord-00123456", "total": 129.95, "currency": "EUR",
            "coupon": "SPRING-SALE", "items": 3, "category": "books", "source": "web"
        }));
        let stored = encode(&typical).unwrap();
        assert_eq!(stored[0], DEFLATED);
        let json = serde_json::to_vec(&typical).unwrap();
        assert!(
            stored.len() < json.len(),
            "{} vs {}",
            stored.len(),
            json.len()
        );
        assert_eq!(decode(&stored).unwrap(), typical);
        // Large and incompressible ones too (the output grows as needed),
        // in ASCII and in a script whose UTF-8 bytes all take 9 bits.
        let noise: String = (0..200_000u32)
            .map(|i| char::from(b'a' + u8::try_from(i.wrapping_mul(2_654_435_761) % 26).unwrap()))
            .collect();
        let large = event(serde_json::json!({ "noise": noise }));
        assert_eq!(decode(&encode(&large).unwrap()).unwrap(), large);
        let cjk: String = (0..100_000u32)
            .map(|i| char::from_u32(0x4e00 + i.wrapping_mul(2_654_435_761) % 20_000).unwrap())
            .collect();
        let large = event(serde_json::json!({ "noise": cjk }));
        assert_eq!(decode(&encode(&large).unwrap()).unwrap(), large);
    }

    #[test]
    fn plain_json_of_earlier_builds_still_reads() {
        let typical = event(serde_json::json!({"a": 1}));
        let plain = serde_json::to_vec(&typical).unwrap();
        assert_eq!(decode(&plain).unwrap(), typical);
    }

    #[test]
    fn damaged_payloads_are_corrupt_not_panics() {
        let stored = encode(&event(serde_json::json!({"a": "b".repeat(500)}))).unwrap();
        for damaged in [
            &b""[..],
            &b"x"[..],
            &stored[..stored.len() / 2],
            &[DEFLATED, 0xff, 0xff, 0xff][..],
        ] {
            assert!(decode(damaged).is_err(), "{damaged:?}");
        }
    }
}
