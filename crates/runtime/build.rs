//! With the `stan` feature: compiles the NATS Streaming wire protocol
//! (proto/stan.proto) with prost-build and protox (a pure-Rust protobuf
//! compiler), so building needs no `protoc`. The generated code lands in
//! OUT_DIR and is included by `transport::stan::proto`; it is never edited by
//! hand. Without the feature there is nothing to generate. `MsgProto.data`
//! is generated as `bytes::Bytes`: decoding a delivery from its NATS payload
//! then shares that buffer instead of copying the payload out of it.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Without it, cargo would run this again whenever any file changes.
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "stan")]
    {
        let proto_dir = "../../proto";
        let files = ["stan.proto"];
        for file in files {
            println!("cargo:rerun-if-changed={proto_dir}/{file}");
        }
        let descriptors = protox::compile(files, [proto_dir])?;
        prost_build::Config::new()
            // A delivered message's payload: decoded from the NATS message's
            // `Bytes` it is a slice of that buffer, not a copy.
            .bytes([".pb.MsgProto.data"])
            .compile_fds(descriptors)?;
    }
    Ok(())
}
