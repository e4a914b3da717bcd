#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(chanel = "orders.placed")]
struct OrderPlaced {
    id: u64,
}

fn main() {}
