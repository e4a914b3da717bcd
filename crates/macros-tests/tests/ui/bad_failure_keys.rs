#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(channel = "orders.placed")]
struct OrderPlaced {
    id: u64,
}

#[flowgate::subscriber(timeout = "soon")]
async fn bill(order: OrderPlaced) -> Result<(), std::io::Error> {
    let _ = order;
    Ok(())
}

#[flowgate::subscriber(timeout = "0s")]
async fn audit(order: OrderPlaced) -> Result<(), std::io::Error> {
    let _ = order;
    Ok(())
}

#[flowgate::subscriber(dead_letter = true)]
async fn ship(order: OrderPlaced) -> Result<(), std::io::Error> {
    let _ = order;
    Ok(())
}

#[flowgate::subscriber(dead_letter = "orders.>")]
async fn refund(order: OrderPlaced) -> Result<(), std::io::Error> {
    let _ = order;
    Ok(())
}

fn main() {}
