#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(channel = "orders.placed")]
struct OrderPlaced {
    id: u64,
}

#[flowgate::subscriber]
async fn bill(order: OrderPlaced) -> Result<u64, std::io::Error> {
    Ok(order.id)
}

fn main() {}
