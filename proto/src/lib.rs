//! The gRPC contracts of Nudge: between nudge-agent and nudge-control-plane
//! (`nudge.v1.Ingest`), and the control plane's management API
//! (`nudge.v1.Management`) and analytics reports (`nudge.v1.Analytics`).
//!
//! Generated from `proto/nudge/v1/*.proto` at build time. Both programs use
//! these types only at their wire boundary (`grpc/` modules) and convert to
//! their own domain types there.
//!
//! [`validate`] is the one definition of a storable envelope, shared so that
//! the agent refuses at intake exactly what the control plane would refuse
//! after the agent had already acknowledged it. [`contact`] names the
//! identify traits that are recipients' addresses.

pub mod contact;
pub mod validate;

/// Package `nudge.v1`.
pub mod v1 {
    #![allow(clippy::all, unused_qualifications, missing_docs)]
    tonic::include_proto!("nudge.v1");
}

/// The encoded `FileDescriptorSet` of every Nudge proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("nudge_descriptor");

/// Converts a wall-clock time to the protobuf timestamp the contract uses.
pub fn timestamp(time: std::time::SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(time)
}
