#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(channel = "orders.>.eu")]
struct OrderPlaced {
    id: u64,
}

#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(channel = "")]
struct OrderShipped {
    id: u64,
}

#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(channel = "orders.*x")]
struct OrderPaid {
    id: u64,
}

// Wildcard channels are fine.
#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(channel = "orders.*")]
struct OrderEvent {
    id: u64,
}

#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(channel = "orders.>")]
struct AnyOrderEvent {
    id: u64,
}

fn main() {}
