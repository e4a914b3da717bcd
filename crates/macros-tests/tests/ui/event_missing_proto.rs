#[derive(Clone, PartialEq, prost::Message, flowgate::Event)]
#[event(codec = "protobuf", proto = "proto/no_such_file.proto")]
struct Shipped {
    #[prost(uint64, tag = "1")]
    order_id: u64,
}

fn main() {}
