//! With the `stan` feature: compiles the NATS Streaming wire protocol
//! (proto/stan.proto) with prost-build and protox (a pure-Rust protobuf
//! compiler), so building needs no `protoc`. The generated code lands in
//! OUT_DIR and is included by `transport::stan::proto`; it is never edited by
//! hand. Without the feature there is nothing to generate.

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
        prost_build::Config::new().compile_fds(descriptors)?;
    }
    Ok(())
}
