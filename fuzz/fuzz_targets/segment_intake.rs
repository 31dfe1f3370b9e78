//! Segment and notify intake (`agent/src/segment`): the first byte picks the
//! endpoint, the rest is the body. No panic; a refusal names what was
//! wrong; and every envelope intake accepts is one the control plane's
//! conversion accepts too (the agent never acknowledges a call the control
//! plane would refuse).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nudge_agent::segment::{CallKind, Endpoint, Received, Request};

const ENDPOINTS: [Endpoint; 10] = [
    Endpoint::Call(CallKind::Track),
    Endpoint::Call(CallKind::Identify),
    Endpoint::Call(CallKind::Page),
    Endpoint::Call(CallKind::Screen),
    Endpoint::Call(CallKind::Group),
    Endpoint::Call(CallKind::Alias),
    Endpoint::Call(CallKind::SessionStart),
    Endpoint::Call(CallKind::SessionEnd),
    Endpoint::Call(CallKind::Notify),
    Endpoint::Batch,
];

fuzz_target!(|input: &[u8]| {
    let Some((&pick, body)) = input.split_first() else {
        return;
    };
    let endpoint = ENDPOINTS[usize::from(pick) % ENDPOINTS.len()];
    let received = Received {
        write_key: "k".into(),
        received_at: prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        },
    };
    let result = Request::parse(endpoint, body).and_then(|request| {
        let _ = request.write_keys();
        let _ = request.contact_traits();
        request.into_envelopes(&received)
    });
    match result {
        Err(error) => {
            assert!(!error.code().is_empty());
            assert!(!error.to_string().trim().is_empty());
        }
        Ok(envelopes) => {
            for envelope in envelopes {
                nudge_proto::validate::check_envelope(&envelope)
                    .expect("intake accepted an envelope nudge-proto refuses");
                if let Err(reason) = nudge_control_plane::grpc::event_from_envelope(
                    "fuzz",
                    envelope,
                    jiff::Timestamp::UNIX_EPOCH,
                ) {
                    panic!("intake accepted what the control plane refuses: {reason}");
                }
            }
        }
    }
});
