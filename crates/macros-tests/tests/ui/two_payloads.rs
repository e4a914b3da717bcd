#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(channel = "orders.placed")]
struct OrderPlaced {
    id: u64,
}

#[flowgate::subscriber]
async fn bill(
    order: OrderPlaced,
    again: flowgate::Message<OrderPlaced>,
) -> Result<(), std::io::Error> {
    let _ = (order, again);
    Ok(())
}

fn main() {}
