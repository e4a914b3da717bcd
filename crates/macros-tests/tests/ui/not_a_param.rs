#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(channel = "orders.placed")]
struct OrderPlaced {
    id: u64,
}

#[flowgate::subscriber]
async fn bill(order: OrderPlaced, attempt: u32) -> Result<(), std::io::Error> {
    let _ = (order, attempt);
    Ok(())
}

fn main() {}
