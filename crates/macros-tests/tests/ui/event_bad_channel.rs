#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(channel = "orders.>")]
struct OrderPlaced {
    id: u64,
}

#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(channel = "")]
struct OrderShipped {
    id: u64,
}

fn main() {}
