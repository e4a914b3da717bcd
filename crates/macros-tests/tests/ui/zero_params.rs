#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(channel = "orders.placed")]
struct OrderPlaced {
    id: u64,
}

#[flowgate::subscriber]
async fn bill() -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {}
