//! Compiles `nudge/v1/*.proto` with protox (pure Rust, so no system `protoc`
//! is needed) and generates the tonic client and server code. The encoded
//! descriptor set is written too, for the gRPC reflection service.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "nudge/v1/ingest.proto",
        "nudge/v1/manage.proto",
        "nudge/v1/analytics.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("nudge_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
