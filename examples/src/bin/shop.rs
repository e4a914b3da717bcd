//! The shop: state, a `Publisher` extractor, a wildcard channel and a
//! typed output (see `flowgate_examples::shop`).
//!
//! ```text
//! cargo run -p flowgate-examples --bin shop                                 # in memory
//! NATS_URL=nats://127.0.0.1:4222 cargo run -p flowgate-examples --bin shop  # JetStream
//! ```
//!
//! It places orders in two regions, waits until each invoice was mailed,
//! prints the invoices and the mails, and exits.

use std::time::Duration;

use flowgate::{Publisher, Transport};
use flowgate_examples::shop::{self, Db, OrderPlaced, Outbox};

const ORDERS: [(&str, u64, &str, i64); 4] = [
    ("shop.orders.eu", 1, "ada", 1250),
    ("shop.orders.us", 2, "grace", 4200),
    ("shop.orders.eu", 3, "edsger", 990),
    ("shop.orders.us", 4, "barbara", 15000),
];

async fn run<T: Transport>(transport: T) -> Result<(), Box<dyn std::error::Error>> {
    let (db, outbox) = (Db::default(), Outbox::default());
    let app = shop::app(db.clone(), outbox.clone())
        .start(transport.clone())
        .await?;
    let publisher = Publisher::new(transport);
    for (subject, id, customer, total_cents) in ORDERS {
        let order = OrderPlaced {
            id,
            customer: customer.into(),
            total_cents,
        };
        publisher.publish_to(subject, &order).await?;
    }
    tokio::time::timeout(Duration::from_secs(30), outbox.wait_for(ORDERS.len()))
        .await
        .map_err(|_| "the invoices were not all mailed within 30 s")?;
    app.shutdown().await?;
    for invoice in db.invoices() {
        println!("invoiced: {invoice:?}");
    }
    for mail in outbox.mails() {
        println!("mailed  : {mail}");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    flowgate_examples::init_logging();
    let outcome = match std::env::var("NATS_URL") {
        Ok(url) => match flowgate::JetStream::connect(&url).await {
            Ok(nats) => run(nats).await,
            Err(err) => Err(err.into()),
        },
        Err(_) => run(flowgate_testkit::InMemory::new()).await,
    };
    flowgate_examples::exit_code(outcome)
}
