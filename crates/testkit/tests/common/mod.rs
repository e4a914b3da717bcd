//! What the integration tests share: an event type, publishing, a log.

#![allow(dead_code)]

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowgate::{Event, OutgoingMessage, Transport};
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
