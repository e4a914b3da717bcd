#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(channel = "orders.placed")]
struct OrderPlaced {
    id: u64,
}

#[flowgate::subscriber(start = "first")]
async fn bill(order: OrderPlaced) -> Result<(), std::io::Error> {
    let _ = order;
    Ok(())
}

#[flowgate::subscriber(start = 0)]
async fn audit(order: OrderPlaced) -> Result<(), std::io::Error> {
    let _ = order;
    Ok(())
}

#[flowgate::subscriber(start = "2024-13-01T00:00:00Z")]
async fn refund(order: OrderPlaced) -> Result<(), std::io::Error> {
    let _ = order;
    Ok(())
}

fn main() {}
