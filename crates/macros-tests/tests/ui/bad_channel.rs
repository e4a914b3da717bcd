#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(channel = "orders.placed")]
struct OrderPlaced {
    id: u64,
}

#[flowgate::subscriber(channel = "orders.*x")]
async fn bill(order: OrderPlaced) -> Result<(), std::io::Error> {
    let _ = order;
    Ok(())
}

#[flowgate::subscriber(channel = "orders..placed")]
async fn audit(order: OrderPlaced) -> Result<(), std::io::Error> {
    let _ = order;
    Ok(())
}

#[flowgate::subscriber(channel = "orders.>.eu")]
async fn ship(order: OrderPlaced) -> Result<(), std::io::Error> {
    let _ = order;
    Ok(())
}

#[flowgate::subscriber(channel = ">x")]
async fn log(order: OrderPlaced) -> Result<(), std::io::Error> {
    let _ = order;
    Ok(())
}

// Wildcard channels are fine.
#[flowgate::subscriber(channel = "orders.*", durable = "fine")]
async fn fine(order: OrderPlaced) -> Result<(), std::io::Error> {
    let _ = order;
    Ok(())
}

#[flowgate::subscriber(channel = "orders.>", durable = "fine-too")]
async fn fine_too(order: OrderPlaced) -> Result<(), std::io::Error> {
    let _ = order;
    Ok(())
}

fn main() {}
