//! The attempts made on a consumer's messages, kept by the broker so the
//! failure budget holds across app restarts and instances.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use flowgate::{AttemptFuture, AttemptStore};

use crate::broker::{Broker, Change};
use crate::InMemory;

/// Attempts by stream sequence for one named consumer of one channel.
#[derive(Debug, Default)]
pub(crate) struct Attempts(Mutex<BTreeMap<u64, u32>>);

impl Attempts {
    fn records(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, u32>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl AttemptStore for Attempts {
    fn load(&self, stream_sequence: u64) -> AttemptFuture<'_, Option<u32>> {
        let found = self.records().get(&stream_sequence).copied();
        Box::pin(std::future::ready(Ok(found)))
    }

    fn save(&self, stream_sequence: u64, attempts: u32) -> AttemptFuture<'_, ()> {
        self.records().insert(stream_sequence, attempts);
        Box::pin(std::future::ready(Ok(())))
    }

    fn forget(&self, stream_sequence: u64) -> AttemptFuture<'_, ()> {
        self.records().remove(&stream_sequence);
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The attempt store of one consumer, as the runtime gets it: its records,
/// behind the broker's faults (see [`InMemory::stall_attempt_store`]).
pub(crate) struct ConsumerAttempts {
    pub(crate) broker: Arc<Broker>,
    pub(crate) channel: String,
    pub(crate) records: Arc<Attempts>,
}

impl ConsumerAttempts {
    /// Whether this call about `sequence` never answers.
    fn stalls(&self, sequence: u64) -> bool {
        let stalls = self
            .broker
            .lock()
            .faults
            .stall_store(&self.channel, sequence);
        if stalls {
            self.broker.changed(Change::default());
        }
        stalls
    }
}

impl AttemptStore for ConsumerAttempts {
    fn load(&self, stream_sequence: u64) -> AttemptFuture<'_, Option<u32>> {
        if self.stalls(stream_sequence) {
            return Box::pin(std::future::pending());
        }
        self.records.load(stream_sequence)
    }

    fn save(&self, stream_sequence: u64, attempts: u32) -> AttemptFuture<'_, ()> {
        if self.stalls(stream_sequence) {
            return Box::pin(std::future::pending());
        }
        self.records.save(stream_sequence, attempts)
    }

    fn forget(&self, stream_sequence: u64) -> AttemptFuture<'_, ()> {
        if self.stalls(stream_sequence) {
            return Box::pin(std::future::pending());
        }
        self.records.forget(stream_sequence)
    }
}

/// Every attempt store of a broker, by channel and consumer name.
#[derive(Debug, Default)]
pub(crate) struct AttemptStores(Mutex<HashMap<(String, String), Arc<Attempts>>>);

impl AttemptStores {
    /// The store of consumer `name` of `channel`, created when new.
    pub(crate) fn of(&self, channel: &str, name: &str) -> Arc<Attempts> {
        let mut stores = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        stores
            .entry((channel.to_owned(), name.to_owned()))
            .or_default()
            .clone()
    }

    fn get(&self, channel: &str, name: &str) -> Option<Arc<Attempts>> {
        let stores = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        stores.get(&(channel.to_owned(), name.to_owned())).cloned()
    }
}

impl InMemory {
    /// The attempts the runtime recorded in the broker for the messages of
    /// durable (or queue) consumer `name` of `channel`, by stream sequence:
    /// what a restarted app, or another instance, continues counting from.
    /// Empty when none are recorded.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flowgate::BoxError> {
    /// use flowgate::{SubscriptionSpec, Transport};
    ///
    /// let broker = flowgate_testkit::InMemory::new();
    /// let spec = SubscriptionSpec::new("jobs").with_durable("worker");
    /// let store = broker.attempt_store(&spec).await?.expect("a durable has one");
    /// store.save(7, 3).await?;
    /// assert_eq!(broker.recorded_attempts("jobs", "worker").get(&7), Some(&3));
    /// # Ok(()) }
    /// ```
    pub fn recorded_attempts(&self, channel: &str, name: &str) -> BTreeMap<u64, u32> {
        self.broker
            .attempts
            .get(channel, name)
            .map(|store| store.records().clone())
            .unwrap_or_default()
    }
}
