#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(channel = "orders.placed")]
struct Envelope<T> {
    body: T,
}

fn main() {}
