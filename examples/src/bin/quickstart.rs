//! The quickstart: JSON events, one publisher and two subscribers.
//!
//! ```text
//! cargo run -p flowgate-examples --bin quickstart                  # in memory, no server
//! NATS_URL=nats://127.0.0.1:4222 cargo run -p flowgate-examples --bin quickstart
//! cargo run -p flowgate-examples --bin quickstart -- --keep-running # until Ctrl-C
//! cargo run -p flowgate-examples --bin quickstart -- --bad-order    # one is dead-lettered
//! ```
//!
//! It publishes a few orders, prints each one as billing and shipping handle
//! it, prints a summary and exits. With `--bad-order` it also publishes an
//! order with a negative total, which billing refuses for good: it goes to
//! the dead letters (`dlq.orders.placed`) at once, where `flowgate dlq list
//! orders.placed` shows it on a real server.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowgate::{App, Publisher, State, Transport};
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

/// What the handlers did, shared with `run` as the app's state.
#[derive(Debug, Clone, Default)]
struct Tally(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    billed: AtomicUsize,
    refused: AtomicUsize,
    revenue_cents: AtomicI64,
    shipped: AtomicUsize,
}

/// Bills each order. Returning `Err` would retry it, then dead-letter it;
/// a negative total never becomes valid, so it is refused for good
/// (`Failure::permanent`): dead-lettered at once.
#[flowgate::subscriber(durable = "billing", max_in_flight = 32)]
async fn bill(order: OrderPlaced, State(tally): State<Tally>) -> Result<(), flowgate::Failure> {
    if order.total_cents < 0 {
        tally.0.refused.fetch_add(1, Ordering::Relaxed);
        println!("billing : order {:>2} refused: negative total", order.id);
        return Err(flowgate::Failure::permanent(BillingError(order.id)));
    }
    tally
        .0
        .revenue_cents
        .fetch_add(order.total_cents, Ordering::Relaxed);
    tally.0.billed.fetch_add(1, Ordering::Relaxed);
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
async fn ship(
    order: flowgate::Message<OrderPlaced>,
    State(tally): State<Tally>,
) -> Result<(), std::io::Error> {
    tally.0.shipped.fetch_add(1, Ordering::Relaxed);
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
    let bad_order = std::env::args().any(|arg| arg == "--bad-order");
    match std::env::var("NATS_URL") {
        Ok(url) => {
            println!("transport: JetStream at {url}");
            run(
                flowgate::JetStream::connect(&url).await?,
                keep_running,
                bad_order,
            )
            .await
        }
        Err(_) => {
            println!("transport: in memory (set NATS_URL to use a NATS server)");
            run(flowgate_testkit::InMemory::new(), keep_running, bad_order).await
        }
    }
}

async fn run<T: Transport>(
    transport: T,
    keep_running: bool,
    bad_order: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let tally = Tally::default();
    let app = App::new()
        .state(tally.clone())
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
    let bad = usize::from(bad_order);
    if bad_order {
        let order = OrderPlaced {
            id: ORDERS + 1,
            customer: "mallory".to_owned(),
            total_cents: -500,
        };
        publisher.publish(&order).await?;
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let counts = &tally.0;
    while (counts.billed.load(Ordering::Relaxed) as u64) < ORDERS
        || counts.refused.load(Ordering::Relaxed) < bad
        || counts.shipped.load(Ordering::Relaxed) < ORDERS as usize + bad
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
        counts.billed.load(Ordering::Relaxed),
        counts.revenue_cents.load(Ordering::Relaxed) as f64 / 100.0,
        counts.shipped.load(Ordering::Relaxed)
    );
    if bad_order {
        println!(
            "refused : order {} went to the dead letters on dlq.orders.placed; on a server, `cargo run -p flowgate-cli -- dlq list orders.placed` shows why",
            ORDERS + 1
        );
    }
    Ok(())
}
