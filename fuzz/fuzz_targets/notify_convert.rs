//! The control plane's conversion of a notify envelope
//! (`control-plane/src/grpc/convert.rs`), as any gRPC client could send it:
//! the input is split at NULs into type, data JSON, cost and channels. No
//! panic; a refusal starts with the field it is about.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nudge_proto::v1::{self as pb, envelope::Body};

fuzz_target!(|text: &str| {
    let mut parts = text.split('\0');
    let mut next = || parts.next().unwrap_or_default().to_owned();
    let notify = pb::Notify {
        r#type: next(),
        data_json: next(),
        cost: next(),
        channels: next()
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect(),
        ..pb::Notify::default()
    };
    let envelope = pb::Envelope {
        id: "n-1".into(),
        user_id: "u-1".into(),
        body: Some(Body::Notify(notify)),
        ..pb::Envelope::default()
    };
    if let Err(reason) = nudge_control_plane::grpc::event_from_envelope(
        "fuzz",
        envelope,
        jiff::Timestamp::UNIX_EPOCH,
    ) {
        assert!(reason.starts_with("notify."), "{reason}");
    }
});
