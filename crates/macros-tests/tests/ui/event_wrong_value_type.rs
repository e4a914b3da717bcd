#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(channel = orders.placed, codec = json)]
struct OrderPlaced {
    id: u64,
}

fn main() {}
