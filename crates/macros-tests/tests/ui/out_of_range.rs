#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(channel = "orders.placed")]
struct OrderPlaced {
    id: u64,
}

#[flowgate::subscriber(max_deliver = 5000000000)]
async fn bill(order: OrderPlaced) -> Result<(), std::io::Error> {
    let _ = order;
    Ok(())
}

fn main() {}
