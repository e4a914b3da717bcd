//! The quickstart: JSON events, one publisher and two subscribers.
//!
//! ```text
//! cargo run -p flowgate-examples --bin quickstart                  # in memory, no server
//! NATS_URL=nats://127.0.0.1:4222 cargo run -p flowgate-examples --bin quickstart
//! cargo run -p flowgate-examples --bin quickstart -- --keep-running # until Ctrl-C
//! ```
//!
//! It publishes a few orders, prints each one as billing and shipping handle
//! it, prints a summary and exits.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use flowgate::{App, Publisher, Transport};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "orders.placed")]
struct OrderPlaced {
    id: u64,
    customer: String,
    total_cents: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("order {0} has a negative total")]
struct BillingError(u64);

static BILLED: AtomicUsize = AtomicUsize::new(0);
static REVENUE_CENTS: AtomicI64 = AtomicI64::new(0);
static SHIPPED: AtomicUsize = AtomicUsize::new(0);

/// Bills each order. Returning `Err` would nak it for redelivery.
#[flowgate::subscriber(durable = "billing", max_in_flight = 32)]
async fn bill(order: OrderPlaced) -> Result<(), BillingError> {
    if order.total_cents < 0 {
        return Err(BillingError(order.id));
    }
    REVENUE_CENTS.fetch_add(order.total_cents, Ordering::Relaxed);
    BILLED.fetch_add(1, Ordering::Relaxed);
    println!(
        "billing : order {:>2} for {:<6} {:>8.2} EUR",
        order.id,
        order.customer,
        order.total_cents as f64 / 100.0
    );
    Ok(())
}

/// Ships each order; takes a `Message` to read the delivery metadata.
#[flowgate::subscriber(channel = "orders.placed", durable = "shipping", max_in_flight = 8)]
async fn ship(order: flowgate::Message<OrderPlaced>) -> Result<(), std::io::Error> {
    SHIPPED.fetch_add(1, Ordering::Relaxed);
    println!(
        "shipping: order {:>2} (stream sequence {}, delivery {})",
        order.id,
        order.stream_sequence(),
        order.delivery_count()
    );
    Ok(())
}

const ORDERS: u64 = 10;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    flowgate_examples::exit_code(demo().await)
}

async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    flowgate_examples::init_logging();
    let keep_running = std::env::args().any(|arg| arg == "--keep-running");
    match std::env::var("NATS_URL") {
        Ok(url) => {
            println!("transport: JetStream at {url}");
            run(flowgate::JetStream::connect(&url).await?, keep_running).await
        }
        Err(_) => {
            println!("transport: in memory (set NATS_URL to use a NATS server)");
            run(flowgate_testkit::InMemory::new(), keep_running).await
        }
    }
}

async fn run<T: Transport>(
    transport: T,
    keep_running: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let app = App::new()
        .subscriber(bill::subscriber())
        .subscriber(ship::subscriber())
        .start(transport.clone())
        .await?;

    let publisher = Publisher::new(transport);
    let customers = ["ada", "brian", "grace", "linus"];
    for id in 1..=ORDERS {
        let order = OrderPlaced {
            id,
            customer: customers[id as usize % customers.len()].to_owned(),
            total_cents: 1000 + 250 * id as i64,
        };
        publisher.publish(&order).await?;
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while (BILLED.load(Ordering::Relaxed) as u64) < ORDERS
        || (SHIPPED.load(Ordering::Relaxed) as u64) < ORDERS
    {
        if tokio::time::Instant::now() > deadline {
            return Err("orders were not all handled within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    if keep_running {
        println!("all demo orders handled; running until Ctrl-C");
        flowgate::shutdown_signal().await;
    }
    app.shutdown().await?;
    println!(
        "summary : {} orders billed ({:.2} EUR), {} shipped",
        BILLED.load(Ordering::Relaxed),
        REVENUE_CENTS.load(Ordering::Relaxed) as f64 / 100.0,
        SHIPPED.load(Ordering::Relaxed)
    );
    Ok(())
}
