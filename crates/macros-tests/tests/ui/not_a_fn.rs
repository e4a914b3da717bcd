#[flowgate::subscriber(channel = "orders.placed")]
struct Bill;

fn main() {}
