//! Handlers with state, a `Publisher` extractor and a typed output on NATS
//! Streaming, against the protocol double over a real nats-server: the
//! output and the extractor's publish are stored, and every input acked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flowgate::extract::{Publisher, State};
use flowgate::App;
use flowgate_tests::{eventually, DEADLINE};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "stan.outputs.orders")]
struct Order {
    id: u64,
}

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "stan.outputs.invoices")]
struct Invoice {
    order_id: u64,
}

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "stan.outputs.audit")]
struct Audited {
    order_id: u64,
}

#[flowgate::subscriber(durable = "invoicing", start = "all")]
async fn invoice(
    order: Order,
    State(handled): State<Arc<AtomicU64>>,
    audit: Publisher<Audited>,
) -> Result<Invoice, flowgate::PublishError> {
    audit.publish(&Audited { order_id: order.id }).await?;
    handled.fetch_add(1, Ordering::SeqCst);
    Ok(Invoice { order_id: order.id })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_and_an_extractors_publish_are_stored_and_every_input_acked() {
    let (_server, double, stan) = flowgate_tests::stan_double::start_with_client("outputs").await;
    let handled = Arc::new(AtomicU64::new(0));
    let app = App::new()
        .state(handled.clone())
        .subscriber(invoice::subscriber())
        .start(stan.clone())
        .await
        .expect("starts on NATS Streaming");
    let publisher = flowgate::Publisher::new(stan.clone());
    for id in 1..=3 {
        publisher.publish(&Order { id }).await.expect("published");
    }
    let done = eventually(DEADLINE, || async {
        double.stored("stan.outputs.invoices") == 3 && double.unacked("stan.outputs.orders") == 0
    })
    .await;
    assert!(
        done,
        "invoices {}, orders unacked {}",
        double.stored("stan.outputs.invoices"),
        double.unacked("stan.outputs.orders")
    );
    app.shutdown().await.expect("shuts down");
    assert_eq!(handled.load(Ordering::SeqCst), 3);
    assert_eq!(double.stored("stan.outputs.audit"), 3);
    let mut ids: Vec<u64> = double
        .payloads("stan.outputs.invoices")
        .iter()
        .map(|p| {
            serde_json::from_slice::<Invoice>(p)
                .expect("an invoice")
                .order_id
        })
        .collect();
    ids.sort();
    assert_eq!(ids, [1, 2, 3]);
}
