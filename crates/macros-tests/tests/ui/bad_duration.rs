#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(channel = "orders.placed")]
struct OrderPlaced {
    id: u64,
}

#[flowgate::subscriber(ack_wait = "30 parsecs")]
async fn bill(order: OrderPlaced) -> Result<(), std::io::Error> {
    let _ = order;
    Ok(())
}

#[flowgate::subscriber(ack_wait = "500ms")]
async fn audit(order: OrderPlaced) -> Result<(), std::io::Error> {
    let _ = order;
    Ok(())
}

fn main() {}
