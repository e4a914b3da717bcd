#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(channel = "orders.placed")]
#[event(codec = "json", channel = "orders.created")]
struct OrderPlaced {
    id: u64,
}

fn main() {}
