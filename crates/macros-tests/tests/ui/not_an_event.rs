struct OrderPlaced {
    id: u64,
}

#[flowgate::subscriber(channel = "orders.placed")]
async fn bill(order: OrderPlaced) -> Result<(), std::io::Error> {
    let _ = order.id;
    Ok(())
}

fn main() {}
