use flowgate::extract::{Attempt, State};

#[derive(Clone)]
struct Db;

#[flowgate::subscriber(channel = "orders.placed")]
async fn bill(State(db): State<Db>, Attempt(attempt): Attempt) -> Result<(), std::io::Error> {
    let _ = (db, attempt);
    Ok(())
}

fn main() {}
