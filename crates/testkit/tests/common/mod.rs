//! What the integration tests share: an event type, publishing, a log.

#![allow(dead_code)]

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowgate::{Event, Failure, Message, OutgoingMessage, StartPosition, Subscriber, Transport};
use flowgate_testkit::InMemory;

pub const CHANNEL: &str = "orders.placed";

/// The test event.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(channel = "orders.placed")]
pub struct Order {
    pub id: u64,
}

/// What handlers return.
pub type Handled = Result<(), std::io::Error>;

/// A handler failure.
pub fn failure(what: &str) -> Handled {
    Err(std::io::Error::other(what.to_owned()))
}

/// The wire form of order `id`.
pub fn order(id: u64) -> OutgoingMessage {
    let payload = Order { id }.encode().expect("an order encodes");
    OutgoingMessage::new(CHANNEL, payload)
}

/// Publishes orders `ids` and waits for each receipt.
pub async fn publish_orders(broker: &InMemory, ids: impl IntoIterator<Item = u64>) {
    for id in ids {
        broker
            .publish(order(id))
            .await
            .expect("published")
            .await
            .expect("stored");
    }
}

/// Awaits `future`, failing the test if it takes longer than ten (possibly
/// paused) minutes.
pub async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(600), future)
        .await
        .expect("did not complete within 10 minutes")
}

/// Waits until the broker is idle, with a deadline.
pub async fn settle(broker: &InMemory) {
    within(broker.wait_idle()).await;
}

/// A list shared between handlers and the test.
#[derive(Debug)]
pub struct Log<T>(Arc<Mutex<Vec<T>>>);

impl<T> Clone for Log<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Clone> Log<T> {
    pub fn new() -> Self {
        Self(Arc::default())
    }

    pub fn push(&self, item: T) {
        self.0.lock().expect("log lock").push(item);
    }

    pub fn items(&self) -> Vec<T> {
        self.0.lock().expect("log lock").clone()
    }
}

/// One handler run.
#[derive(Debug, Clone)]
pub struct Run {
    /// Which app ran it (for tests with several).
    pub app: usize,
    pub id: u64,
    pub sequence: u64,
    pub delivery: u32,
    /// When the handler returned.
    pub at: tokio::time::Instant,
    /// Whether it returned `Ok`.
    pub ok: bool,
}

/// Every handler run of a test.
pub type Runs = Log<Run>;

impl Runs {
    /// Records a run of `order` by `app` that returned `ok`.
    pub fn record(&self, app: usize, order: &flowgate::Message<Order>, ok: bool) {
        self.push(Run {
            app,
            id: order.id,
            sequence: order.stream_sequence(),
            delivery: order.delivery_count(),
            at: tokio::time::Instant::now(),
            ok,
        });
    }

    /// How many times the handler ran for `id`.
    pub fn times(&self, id: u64) -> usize {
        self.items().iter().filter(|run| run.id == id).count()
    }

    /// The runs of `id`.
    pub fn of(&self, id: u64) -> Vec<Run> {
        self.items()
            .into_iter()
            .filter(|run| run.id == id)
            .collect()
    }
}

/// The channel sequences whose dead letters the broker stored.
pub fn dead_lettered_sequences(broker: &InMemory) -> Vec<u64> {
    broker
        .channel_messages(&format!("dlq.{CHANNEL}"))
        .iter()
        .filter_map(|letter| {
            letter
                .headers
                .as_ref()?
                .get(flowgate::dead_letter::ORIGINAL_SEQUENCE)?
                .as_str()
                .parse()
                .ok()
        })
        .collect()
}

/// Fails the test when the broker logged an ack of a message (its own, or
/// one covering it) before a handler run of it returned `Ok`: a message
/// settled without being handled. A dead-lettered message is settled by the
/// coalesced ack that passes it, which is no loss.
pub fn assert_nothing_acked_unhandled(broker: &InMemory, runs: &Runs) {
    let runs = runs.items();
    let dead_lettered = dead_lettered_sequences(broker);
    for settlement in broker.settlements(CHANNEL).iter() {
        if settlement.outcome != flowgate_testkit::Outcome::Acked
            || dead_lettered.contains(&settlement.sequence)
        {
            continue;
        }
        let handled = runs
            .iter()
            .any(|run| run.ok && run.sequence == settlement.sequence && run.at <= settlement.at);
        assert!(
            handled,
            "sequence {} was acked (covered by {:?}) before any handler run of it succeeded; runs: {:?}",
            settlement.sequence,
            settlement.covered_by,
            runs.iter()
                .map(|r| (r.sequence, r.delivery, r.ok))
                .collect::<Vec<_>>()
        );
    }
}

/// The dead letters of `CHANNEL`, as order ids.
pub fn dead_letter_ids(broker: &InMemory) -> Vec<u64> {
    let letters: Vec<Order> = broker
        .published_on(&format!("dlq.{CHANNEL}"))
        .expect("dead letters decode");
    letters.iter().map(|order| order.id).collect()
}

/// A durable `billing` subscriber from the start that works `work`, then
/// answers with `outcome` and records the run.
pub fn billing<F>(runs: &Runs, app: usize, work: Duration, outcome: F) -> Subscriber
where
    F: Fn(&Message<Order>) -> Result<(), Failure> + Clone + Send + Sync + 'static,
{
    let runs = runs.clone();
    let handler = move |order: Message<Order>| {
        let runs = runs.clone();
        let outcome = outcome.clone();
        async move {
            if !work.is_zero() {
                tokio::time::sleep(work).await;
            }
            let result = outcome(&order);
            runs.record(app, &order, result.is_ok());
            result
        }
    };
    Subscriber::new(CHANNEL, handler)
        .durable("billing")
        .start(StartPosition::All)
}
