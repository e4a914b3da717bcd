//! Compiles proto/*.proto with prost-build and protox (a pure-Rust protobuf
//! compiler), so building needs no `protoc`. The generated code lands in
//! OUT_DIR and is included with `include!`; it is never edited by hand.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = "../proto";
    let files = ["telemetry.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={proto_dir}/{file}");
    }
    let descriptors = protox::compile(files, [proto_dir])?;
    prost_build::Config::new()
        .type_attribute(
            ".flowgate.examples.telemetry.Reading",
            "#[derive(::flowgate::Event)] #[event(channel = \"telemetry.readings\", codec = \"protobuf\", proto = \"../proto/telemetry.proto\")]",
        )
        .compile_fds(descriptors)?;
    Ok(())
}
