//! Typed outputs on the in-memory broker: what a handler returns is
//! published, with an id made of the input's position, before the input is
//! acked; a publish that fails keeps the input unacked; an input handled
//! again after a crash publishes its output once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowgate::{App, BoxError, BoxHandlerService, Request};
use flowgate_testkit::{call, InMemory, Outcome};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tower::ServiceExt;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "outputs.orders")]
struct Order {
    id: u64,
    lines: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "outputs.invoices")]
struct Invoice {
    order_id: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "outputs.picks")]
struct Pick {
    order_id: u64,
    line: u32,
}

#[flowgate::subscriber(durable = "invoicing", ack_wait = "2s")]
async fn invoice(order: Order) -> Result<Invoice, std::io::Error> {
    Ok(Invoice { order_id: order.id })
}

#[flowgate::subscriber(durable = "picking")]
async fn pick(order: Order) -> Result<Vec<Pick>, std::io::Error> {
    Ok((0..order.lines)
        .map(|line| Pick {
            order_id: order.id,
            line,
        })
        .collect())
}

#[flowgate::subscriber(durable = "refunds")]
async fn refund(order: Order) -> Result<Option<Invoice>, std::io::Error> {
    Ok((order.lines == 0).then_some(Invoice { order_id: order.id }))
}

fn ids(broker: &InMemory, channel: &str) -> Vec<String> {
    broker
        .channel_messages(channel)
        .into_iter()
        .filter_map(|m| m.message_id)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn an_output_is_published_with_the_inputs_position_as_its_id() {
    let broker = InMemory::new();
    let outcome = call(invoice::subscriber(), &Order { id: 1, lines: 2 })
        .on(&broker)
        .await;
    assert_eq!(outcome, Outcome::Acked);
    assert_eq!(
        broker.published::<Invoice>().expect("decodes"),
        [Invoice { order_id: 1 }]
    );
    assert_eq!(
        ids(&broker, "outputs.invoices"),
        ["flowgate:outputs.orders:invoicing:1:0"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_vec_publishes_each_output_and_none_publishes_nothing() {
    let broker = InMemory::new();
    let outcome = call(pick::subscriber(), &Order { id: 2, lines: 3 })
        .on(&broker)
        .await;
    assert_eq!(outcome, Outcome::Acked);
    let mut picked = ids(&broker, "outputs.picks");
    picked.sort();
    assert_eq!(
        picked,
        (0..3)
            .map(|i| format!("flowgate:outputs.orders:picking:1:{i}"))
            .collect::<Vec<_>>()
    );

    let broker = InMemory::new();
    let outcome = call(refund::subscriber(), &Order { id: 3, lines: 1 })
        .on(&broker)
        .await;
    assert_eq!(outcome, Outcome::Acked);
    assert!(broker.channel_messages("outputs.invoices").is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_output_that_is_not_stored_keeps_the_input_unacked() {
    let broker = InMemory::new();
    broker.fail_publishes("outputs.invoices", 1_000);
    let outcome = call(invoice::subscriber(), &Order { id: 4, lines: 1 })
        .on(&broker)
        .await;
    assert!(
        matches!(outcome, Outcome::Nakked { .. }),
        "retried, not acked: {outcome:?}"
    );
    assert!(broker.channel_messages("outputs.invoices").is_empty());
    let acked = broker.settlements("outputs.orders").acked();
    assert!(acked.is_empty(), "acked without its output: {acked:?}");
}

/// A layer that lets the first message's handler (and its output's
/// publish) finish, then never returns: the app dies between the output's
/// publish and the input's ack.
fn crash_after_first_handled(
    crashed: Arc<Notify>,
    handled: Arc<AtomicUsize>,
) -> impl tower::Layer<BoxHandlerService, Service = BoxHandlerService> + Clone {
    tower::layer::layer_fn(move |inner: BoxHandlerService| {
        let crashed = crashed.clone();
        let handled = handled.clone();
        BoxHandlerService::new(tower::service_fn(move |request: Request| {
            let inner = inner.clone();
            let crashed = crashed.clone();
            let handled = handled.clone();
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

/// Starts an app whose first handled message never gets its ack, publishes
/// order 5, and returns once its output was published: the app is then
/// shut down, as if it had died.
async fn crash_after_the_output(broker: &InMemory) -> Arc<AtomicUsize> {
    let crashed = Arc::new(Notify::new());
    let handled = Arc::new(AtomicUsize::new(0));
    let first = App::new()
        .layer(crash_after_first_handled(crashed.clone(), handled.clone()))
        .subscriber(invoice::subscriber())
        .shutdown_timeout(Duration::ZERO)
        .start(broker.clone())
        .await
        .expect("started");
    broker
        .publish_event(&Order { id: 5, lines: 1 })
        .await
        .expect("published");
    crashed.notified().await;
    let _ = first.shutdown().await;
    handled
}

/// A second instance of the app handles what the first left unacked.
async fn take_over(broker: &InMemory) {
    let second = App::new()
        .subscriber(invoice::subscriber())
        .start(broker.clone())
        .await
        .expect("started");
    broker
        .wait_until(|broker| !broker.settlements("outputs.orders").acked().is_empty())
        .await;
    second.shutdown().await.expect("shut down");
}

#[tokio::test(start_paused = true)]
async fn an_input_redelivered_after_the_duplicate_window_publishes_its_output_again() {
    let broker = InMemory::new();
    crash_after_the_output(&broker).await;
    // Nobody runs the app for longer than the broker remembers the id.
    tokio::time::advance(flowgate_testkit::DUPLICATE_WINDOW).await;
    take_over(&broker).await;
    assert_eq!(
        broker.published::<Invoice>().expect("decodes"),
        [Invoice { order_id: 5 }, Invoice { order_id: 5 }],
        "past the window the output is stored again, as on JetStream"
    );
}

#[tokio::test(start_paused = true)]
async fn an_input_handled_again_after_a_crash_publishes_its_output_once() {
    let broker = InMemory::new();
    let handled = crash_after_the_output(&broker).await;
    assert_eq!(broker.channel_messages("outputs.invoices").len(), 1);
    assert!(broker.settlements("outputs.orders").acked().is_empty());

    take_over(&broker).await;
    assert_eq!(
        handled.load(Ordering::SeqCst),
        1,
        "the first instance handled it once"
    );
    let consumer = broker
        .consumer_info("outputs.orders", "invoicing")
        .expect("the durable exists");
    assert_eq!(consumer.delivery_count(1), 2, "redelivered");
    assert_eq!(
        broker.published::<Invoice>().expect("decodes"),
        [Invoice { order_id: 5 }],
        "the second publish of the output was a duplicate"
    );
}
