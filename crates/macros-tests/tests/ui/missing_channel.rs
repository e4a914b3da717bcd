#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
struct OrderPlaced {
    id: u64,
}

#[flowgate::subscriber(durable = "billing")]
async fn bill(order: OrderPlaced) -> Result<(), std::io::Error> {
    let _ = order;
    Ok(())
}

fn main() {}
