//! Typed outputs on a real JetStream server: the output is stored before
//! the input is acked, and an input handled again after the app died
//! between the two publishes its output once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowgate::{App, BoxError, BoxHandlerService, Publisher, Request};
use flowgate_tests::{
    consumer_state, eventually, init_tracing, stored_messages, NatsServer, DEADLINE,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tower::ServiceExt;

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "e2e.outputs.orders")]
struct Order {
    id: u64,
}

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "e2e.outputs.invoices")]
struct Invoice {
    order_id: u64,
}

/// How many times `invoice` ran, over both app instances.
static RUNS: AtomicUsize = AtomicUsize::new(0);

#[flowgate::subscriber(durable = "invoicing", ack_wait = "1s", max_deliver = 5)]
async fn invoice(order: Order) -> Result<Invoice, std::io::Error> {
    RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(Invoice { order_id: order.id })
}

/// Lets the first message's handler, and the publish of its output, finish;
/// then never returns: the app dies between the output's publish and the
/// input's ack.
fn crash_after_first_handled(
    crashed: Arc<Notify>,
) -> impl tower::Layer<BoxHandlerService, Service = BoxHandlerService> + Clone {
    let handled = Arc::new(AtomicUsize::new(0));
    tower::layer::layer_fn(move |inner: BoxHandlerService| {
        let crashed = crashed.clone();
        let handled = handled.clone();
        BoxHandlerService::new(tower::service_fn(move |request: Request| {
            let (inner, crashed, handled) = (inner.clone(), crashed.clone(), handled.clone());
            async move {
                inner.oneshot(request).await?;
                if handled.fetch_add(1, Ordering::SeqCst) == 0 {
                    crashed.notify_one();
                    std::future::pending::<()>().await;
                }
                Ok::<(), BoxError>(())
            }
        }))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_handled_again_after_a_crash_publishes_its_output_once() {
    init_tracing();
    let server = NatsServer::start().await;
    let orders = "e2e.outputs.orders";
    let invoices = "e2e.outputs.invoices";

    let nats_1 = server.jetstream().await;
    let crashed = Arc::new(Notify::new());
    let first = App::new()
        .layer(crash_after_first_handled(crashed.clone()))
        .subscriber(invoice::subscriber())
        .shutdown_timeout(Duration::ZERO)
        .start(nats_1.clone())
        .await
        .expect("app 1 starts");
    Publisher::new(nats_1.clone())
        .publish(&Order { id: 7 })
        .await
        .expect("published");
    tokio::time::timeout(DEADLINE, crashed.notified())
        .await
        .expect("the first instance handled the order");
    assert_eq!(
        stored_messages(&nats_1, invoices).await.len(),
        1,
        "stored before the ack"
    );
    let state = consumer_state(&nats_1, orders, "invoicing")
        .await
        .expect("consumer");
    assert_eq!(state.ack_floor, 0, "the input is not acked: {state:?}");
    // The first instance dies without acking; a second process takes over.
    let _ = first.shutdown().await;
    drop(nats_1);

    let nats_2 = server.jetstream().await;
    let second = App::new()
        .subscriber(invoice::subscriber())
        .start(nats_2.clone())
        .await
        .expect("app 2 starts");
    let acked = eventually(DEADLINE, || async {
        consumer_state(&nats_2, orders, "invoicing")
            .await
            .is_some_and(|s| s.ack_floor == 1 && s.num_ack_pending == 0)
    })
    .await;
    assert!(
        acked,
        "{:?}",
        consumer_state(&nats_2, orders, "invoicing").await
    );
    second.shutdown().await.expect("app 2 shuts down");

    assert_eq!(RUNS.load(Ordering::SeqCst), 2, "handled by both instances");
    let stored = stored_messages(&nats_2, invoices).await;
    assert_eq!(stored.len(), 1, "the second publish was a duplicate");
    let id = stored[0]
        .headers
        .get("Nats-Msg-Id")
        .map(|id| id.as_str().to_owned());
    assert_eq!(
        id.as_deref(),
        Some("flowgate:e2e.outputs.orders:invoicing:1:0")
    );
    let invoice: Invoice = serde_json::from_slice(&stored[0].payload).expect("an invoice");
    assert_eq!(invoice.order_id, 7);
}
