#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(channel = "orders.placed")]
struct OrderPlaced {
    id: u64,
}

#[flowgate::subscriber(max_in_flight = 0, ack_wait = "soon", colour = "blue")]
fn bill(order: OrderPlaced, extra: u8) {
    let _ = (order, extra);
}

fn main() {}
