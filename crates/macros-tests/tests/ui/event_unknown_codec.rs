#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(codec = "yaml")]
struct OrderPlaced {
    id: u64,
}

fn main() {}
