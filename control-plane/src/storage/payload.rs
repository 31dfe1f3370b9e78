//! The stored form of an event (`events.payload`): its JSON, compressed.
//!
//! # Promises
//!
//! * [`encode`] writes one tag byte, [`ZSTD_DICTIONARY_1`], then the
//!   event's JSON as one zstd frame (level 1, with its content size)
//!   compressed against a preset dictionary of what events share
//!   ([`dictionary`]): about half the JSON's size for a typical track
//!   event, which neither engine compresses by itself (PostgreSQL
//!   compresses only values of about 2 KB and more).
//! * Why zstd and not deflate, which stored events before: a deflate
//!   stream must start from a reset state, and zlib-rs clears a 128 KiB
//!   hash table on every reset, then hashes the whole dictionary in again:
//!   over a tenth of the control plane's CPU during ingest went there
//!   (`perf record`; README, storage benchmark). zstd prepares the
//!   dictionary once ([`zstd::dict::EncoderDictionary`]) and each frame
//!   refers to it.
//! * [`decode`] reads that form and the two that earlier builds stored:
//!   [`DEFLATED`] (deflate, no dictionary) and plain JSON (starts with
//!   `{`), so stored events stay readable without a rewrite.
//! * A payload in none of these forms, or one that would decompress to
//!   more than [`MAX_JSON_BYTES`], is [`StorageError::Corrupt`], never a
//!   panic; the size is checked before anything is allocated for it.
//! * Compression and decompression contexts are kept per thread (making
//!   one per event would cost more than the compression).

use std::cell::RefCell;
use std::sync::LazyLock;

use flate2::{Decompress, FlushDecompress, Status};
use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

use super::StorageError;
use crate::event::Event;

mod dictionary;

pub use dictionary::DICTIONARY_1;

/// The tag of a payload deflated without a dictionary, as builds before
/// the dictionary stored them (JSON never starts with a NUL byte).
pub const DEFLATED: u8 = 0;
/// The tag of a zstd frame compressed against [`DICTIONARY_1`]: what
/// [`encode`] writes.
pub const ZSTD_DICTIONARY_1: u8 = 1;
/// The most a payload may decompress to: far above any event ingest
/// accepts (a gRPC batch is at most a few MB).
pub const MAX_JSON_BYTES: usize = 64 << 20;
/// zstd's level 1: CPU bounds ingest, and higher levels gained ~2 % of
/// size on small events for ~7 % more time (measured with the README's
/// events).
const LEVEL: i32 = 1;

static ENCODER_DICTIONARY: LazyLock<EncoderDictionary<'static>> =
    LazyLock::new(|| EncoderDictionary::copy(DICTIONARY_1, LEVEL));
static DECODER_DICTIONARY: LazyLock<DecoderDictionary<'static>> =
    LazyLock::new(|| DecoderDictionary::copy(DICTIONARY_1));

thread_local! {
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
    static INFLATER: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

fn zstd_error(what: &str) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |error| StorageError::Corrupt(format!("{what}: {error}"))
}

/// The stored form of `event`.
pub fn encode(event: &Event) -> Result<Vec<u8>, StorageError> {
    let json = serde_json::to_vec(event)?;
    COMPRESSOR.with_borrow_mut(|slot| {
        let compressor = match slot {
            Some(compressor) => compressor,
            None => {
                let mut compressor = Compressor::with_prepared_dictionary(&ENCODER_DICTIONARY)
                    .map_err(zstd_error("zstd compressor"))?;
                // The content size lets `decode` check and allocate the
                // output first. No checksum: 4 bytes per event, where both
                // engines already checksum what they write to their WAL.
                // No dictionary id: the tag names the dictionary.
                compressor
                    .include_contentsize(true)
                    .and_then(|()| compressor.include_checksum(false))
                    .and_then(|()| compressor.include_dictid(false))
                    .map_err(zstd_error("zstd compressor"))?;
                slot.insert(compressor)
            }
        };
        let mut out = vec![0; 1 + zstd::zstd_safe::compress_bound(json.len())];
        out[0] = ZSTD_DICTIONARY_1;
        let written = compressor
            .compress_to_buffer(&json, &mut out[1..])
            .map_err(zstd_error("zstd"))?;
        out.truncate(1 + written);
        Ok(out)
    })
}

/// The event stored as `payload`.
pub fn decode(payload: &[u8]) -> Result<Event, StorageError> {
    match payload.split_first() {
        Some((&ZSTD_DICTIONARY_1, frame)) => Ok(serde_json::from_slice(&decompress(frame)?)?),
        Some((&DEFLATED, deflated)) => Ok(serde_json::from_slice(&inflate(deflated)?)?),
        Some((b'{', _)) => Ok(serde_json::from_slice(payload)?),
        _ => Err(StorageError::Corrupt(
            "an event payload that is neither compressed nor JSON".to_owned(),
        )),
    }
}

/// Decompresses one zstd frame compressed against [`DICTIONARY_1`].
fn decompress(frame: &[u8]) -> Result<Vec<u8>, StorageError> {
    let size = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(size)) => size,
        Ok(None) | Err(_) => {
            return Err(StorageError::Corrupt(
                "an event payload's zstd frame does not state its size".to_owned(),
            ));
        }
    };
    let size = usize::try_from(size)
        .ok()
        .filter(|size| *size <= MAX_JSON_BYTES)
        .ok_or_else(|| {
            StorageError::Corrupt(format!(
                "an event payload decompresses to more than {MAX_JSON_BYTES} bytes"
            ))
        })?;
    DECOMPRESSOR.with_borrow_mut(|slot| {
        let decompressor = match slot {
            Some(decompressor) => decompressor,
            None => slot.insert(
                Decompressor::with_prepared_dictionary(&DECODER_DICTIONARY)
                    .map_err(zstd_error("zstd decompressor"))?,
            ),
        };
        let mut json = Vec::with_capacity(size);
        decompressor
            .decompress_to_buffer(frame, &mut json)
            .map_err(zstd_error("an event payload's zstd frame"))?;
        if json.len() != size {
            return Err(StorageError::Corrupt(
                "an event payload's zstd frame is not the size it states".to_owned(),
            ));
        }
        Ok(json)
    })
}

/// Inflates a raw deflate stream (payloads of earlier builds).
fn inflate(deflated: &[u8]) -> Result<Vec<u8>, StorageError> {
    INFLATER.with_borrow_mut(|decompressor| {
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
    fn events_round_trip_compressed_and_smaller() {
        let typical = event(serde_json::json!({
            "orderId": "ord-00123456", "total": 129.95, "currency": "EUR",
            "coupon": "SPRING-SALE", "items": 3, "category": "books", "source": "web"
        }));
        assert_eq!(encode(&typical).unwrap()[0], ZSTD_DICTIONARY_1);
        assert_round_trips_in_under_half(&typical);
        // Large and hardly compressible ones too, in ASCII and in a
        // script of three-byte UTF-8 characters.
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

    /// What analytics.js sends for a product added to a cart, as stored:
    /// the dictionary's common case.
    #[test]
    fn a_browser_event_stores_in_under_half_its_json() {
        let mut browser = event(serde_json::json!({
            "product_id": "507f1f77bcf86cd799439011", "sku": "G-32", "category": "Games",
            "name": "Monopoly: 3rd Edition", "brand": "Hasbro", "variant": "200 pieces",
            "price": 18.99, "quantity": 1, "currency": "USD"
        }));
        browser.id = "019395a2-6d1c-7c3e-9f55-3a1e2b4c5d6e".to_owned();
        browser.anonymous_id = Some("507f191e810c19729de860ea".to_owned());
        browser.timestamp = Some("2026-12-04T10:11:12.123Z".parse().unwrap());
        browser.sent_at = Some("2026-12-04T10:11:12.456Z".parse().unwrap());
        if let EventBody::Track { event, .. } = &mut browser.body {
            "Product Added".clone_into(event);
        }
        let serde_json::Value::Object(context) = serde_json::json!({
            "ip": "203.0.113.7", "library": {"name": "analytics.js", "version": "next-1.70.0"},
            "locale": "en-US",
            "page": {"path": "/checkout", "referrer": "https://www.google.com/", "search": "",
                     "title": "Checkout", "url": "https://shop.example.com/checkout"},
            "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 \
                          (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
        }) else {
            unreachable!()
        };
        browser.context = context;
        assert_round_trips_in_under_half(&browser);
    }

    /// `event` is stored in under half its JSON and read back unchanged.
    fn assert_round_trips_in_under_half(event: &Event) {
        let json = serde_json::to_vec(event).unwrap();
        let stored = encode(event).unwrap();
        assert!(
            stored.len() < json.len() / 2,
            "{} vs {}",
            stored.len(),
            json.len()
        );
        assert_eq!(&decode(&stored).unwrap(), event);
    }

    /// Every payload stored with [`ZSTD_DICTIONARY_1`] needs exactly
    /// these bytes to be read back.
    #[test]
    fn the_dictionary_never_changes() {
        use sha2::{Digest, Sha256};
        let digest: String = Sha256::digest(DICTIONARY_1)
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        assert_eq!(
            digest,
            "f420430fb94d4e49c34dfd11b20726fcad9405d5c0f53c2a0398ec950183dce4"
        );
    }

    /// Earlier builds deflated events (tag 0).
    #[test]
    fn payloads_deflated_by_earlier_builds_still_read() {
        use flate2::{Compress, Compression, FlushCompress};
        let typical = event(serde_json::json!({"orderId": "ord-1", "total": 12.5}));
        let mut compressor = Compress::new(Compression::fast(), false);
        let mut stored = vec![DEFLATED];
        stored.reserve(4096);
        let json = serde_json::to_vec(&typical).unwrap();
        let status = compressor
            .compress_vec(&json, &mut stored, FlushCompress::Finish)
            .unwrap();
        assert_eq!(status, Status::StreamEnd);
        assert_eq!(decode(&stored).unwrap(), typical);
        // The tag is what says which format follows.
        let mut mislabelled = encode(&typical).unwrap();
        mislabelled[0] = DEFLATED;
        assert!(decode(&mislabelled).is_err());
    }

    /// A frame's stated size is checked before anything is allocated.
    #[test]
    fn a_frame_stating_a_huge_size_is_corrupt() {
        // Magic, a header with an 8-byte content size and the single
        // segment flag, then 2^40 as that size, then an empty raw block.
        let mut stored = vec![ZSTD_DICTIONARY_1, 0x28, 0xb5, 0x2f, 0xfd, 0xe0];
        stored.extend_from_slice(&(1u64 << 40).to_le_bytes());
        stored.extend_from_slice(&[0x01, 0x00, 0x00]);
        let error = decode(&stored).unwrap_err().to_string();
        assert!(error.contains("more than"), "{error}");
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
            &[ZSTD_DICTIONARY_1, 0xff, 0xff, 0xff][..],
            &[ZSTD_DICTIONARY_1, 0x28, 0xb5, 0x2f, 0xfd][..],
            &[2, 0x03, 0x00][..],
        ] {
            assert!(decode(damaged).is_err(), "{damaged:?}");
        }
    }
}
