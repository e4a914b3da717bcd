#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(channel = "orders.placed")]
struct OrderPlaced {
    id: u64,
}

#[flowgate::subscriber(durable = billing, max_in_flight = "32", ack_wait = 30, start = true)]
async fn bill(order: OrderPlaced) -> Result<(), std::io::Error> {
    let _ = order;
    Ok(())
}

fn main() {}
