#[derive(Clone, PartialEq, prost::Message, flowgate::Event)]
#[event(codec = "protobuf", proto = "proto/orders.txt")]
struct NotAProtoFile {
    #[prost(uint64, tag = "1")]
    id: u64,
}

#[derive(Clone, PartialEq, prost::Message, flowgate::Event)]
#[event(codec = "protobuf", proto = "/home/me/proto/orders.proto")]
struct AbsolutePath {
    #[prost(uint64, tag = "1")]
    id: u64,
}

#[derive(Clone, PartialEq, prost::Message, flowgate::Event)]
#[event(codec = "protobuf", proto = 5)]
struct NotAString {
    #[prost(uint64, tag = "1")]
    id: u64,
}

#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(proto = "proto/orders.proto")]
struct JsonByDefault {
    id: u64,
}

#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(codec = "json", proto = "proto/orders.proto")]
struct JsonSaidSo {
    id: u64,
}

fn main() {}
