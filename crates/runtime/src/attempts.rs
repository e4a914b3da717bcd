//! The failure budget of one subscriber: how many attempts each failing
//! message has had, so a redelivery continues the count where the last
//! delivery stopped, in this process or (with an [`AttemptStore`]) in any
//! process bound to the same consumer.
//!
//! The rule that makes the budget hold across restarts and instances: an
//! attempt numbered above the broker's delivery count is saved to the store
//! before it runs. Every attempt is then covered either by the broker (the
//! next delivery's count is higher) or by the store, so the next delivery
//! starts at `max(delivery count, stored + 1)` and no attempt number runs
//! twice, whether the last process naked, shut down or was killed mid-retry.
//! A delivery whose first attempt would be past the budget is dead-lettered
//! without running the handler.
//!
//! Only failing messages touch the store: a first delivery starts at attempt
//! 1 without asking it, and a message is forgotten only when it had a record.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::transport::AttemptStore;
use crate::{BoxError, SubscriptionSpec};

/// How many messages are remembered in memory; past that the one with the
/// lowest stream sequence (the oldest) is dropped, and for it the store (or
/// the broker's delivery count, a lower bound) is used instead.
const CAPACITY: usize = 65_536;

/// The longest a redelivery waits for its record (and for saving the
/// attempt it starts at) before it starts from what the process knows, and
/// retries only through the broker. The dispatcher waits for it, so it is
/// short; it is also at most half the ack wait.
const LOAD_TIMEOUT: Duration = Duration::from_secs(2);

/// A future of the ledger's rare paths, boxed so they do not grow the task
/// of every message.
pub(crate) type LedgerFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Why the ledger could not keep a message's count.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LedgerError {
    /// Loading a redelivered message's record took too long.
    #[error("loading the attempts of stream sequence {sequence} on `{channel}` from the attempt store timed out after {after:?}")]
    LoadTimedOut {
        /// The channel.
        channel: String,
        /// The message.
        sequence: u64,
        /// How long the load was given.
        after: Duration,
    },
    /// The store did not answer in time a moment ago: it is not asked
    /// again until its window has passed.
    #[error("the attempt store did not answer in time within the last {window:?}; the attempts of stream sequence {sequence} on `{channel}` are not loaded from it until it may answer again")]
    StoreOutOfReach {
        /// The channel.
        channel: String,
        /// The message.
        sequence: u64,
        /// How long the store is left alone after it timed out.
        window: Duration,
    },
    /// Loading a redelivered message's record failed.
    #[error("loading the attempts of stream sequence {sequence} on `{channel}` from the attempt store failed: {source}")]
    Load {
        /// The channel.
        channel: String,
        /// The message.
        sequence: u64,
        /// The store's error.
        #[source]
        source: BoxError,
    },
    /// Saving an attempt failed.
    #[error("saving attempt {attempt} of stream sequence {sequence} on `{channel}` to the attempt store failed: {source}")]
    Save {
        /// The channel.
        channel: String,
        /// The message.
        sequence: u64,
        /// The attempt that was to be saved.
        attempt: u32,
        /// The store's error.
        #[source]
        source: BoxError,
    },
    /// The record of this delivery could not be read or written, so its
    /// in-process retries stop: each further attempt is a broker delivery,
    /// counted by the broker.
    #[error("the attempt store failed for stream sequence {sequence} at this delivery: no in-process retries, the failure goes back to the broker")]
    Unavailable {
        /// The message.
        sequence: u64,
    },
}

/// What a delivery is settled with when every attempt of its budget was
/// made before it came (by earlier deliveries, here or in another instance).
#[derive(Debug, thiserror::Error)]
#[error("the failure budget of {budget} attempt(s) was spent by earlier deliveries (recorded in the attempt store); the handler did not run again")]
pub(crate) struct BudgetSpent {
    budget: u32,
}

/// Where one delivery's attempts start, and how its in-process retries are
/// recorded.
#[derive(Debug)]
pub(crate) struct FirstAttempt {
    /// The attempt number the delivery starts at (at most the budget).
    pub(crate) attempt: u32,
    /// What the retry layer does before each in-process retry.
    pub(crate) recorder: AttemptRecorder,
    /// Set when the budget was spent before this delivery.
    spent: Option<u32>,
}

impl FirstAttempt {
    /// `Ok` when the handler may run; the error to settle the delivery with
    /// (a dead letter, the budget being spent) when it may not.
    pub(crate) fn within_budget(&self) -> Result<(), BoxError> {
        match self.spent {
            None => Ok(()),
            Some(budget) => Err(Box::new(BudgetSpent { budget })),
        }
    }
}

/// How the retry layer records a message's in-process attempts. Travels in
/// the [`Request`](crate::Request); cloning it costs at most a reference count.
#[derive(Debug, Clone, Default)]
pub(crate) enum AttemptRecorder {
    /// Nothing to record (no attempt store): in-process attempts are counted
    /// by this process and reported at the nak.
    #[default]
    Unrecorded,
    /// Save each in-process attempt to the subscriber's store before it runs.
    Ledger(Arc<AttemptLedger>),
    /// The store failed for this delivery: no in-process retries.
    Unavailable,
}

impl AttemptRecorder {
    /// Called before in-process attempt `attempt` of the message at
    /// `sequence` runs: `Ok` to run it, an error to stop retrying in-process
    /// and hand the failure back to the dispatcher (which naks).
    pub(crate) async fn before_retry(&self, sequence: u64, attempt: u32) -> Result<(), BoxError> {
        match self {
            AttemptRecorder::Unrecorded => Ok(()),
            AttemptRecorder::Ledger(ledger) => ledger.save(sequence, attempt).await,
            AttemptRecorder::Unavailable => Err(Box::new(LedgerError::Unavailable { sequence })),
        }
    }
}

/// Stream sequence → the highest attempt known made or started, for the
/// messages of one subscriber that failed and are not settled yet; backed by
/// the transport's [`AttemptStore`] where there is one.
pub(crate) struct AttemptLedger {
    made: Mutex<BTreeMap<u64, u32>>,
    /// `made.len()`, readable without the lock: while nothing is recorded,
    /// settling a message costs no lock.
    entries: AtomicUsize,
    capacity: usize,
    store: Option<Arc<dyn AttemptStore>>,
    budget: Option<u32>,
    load_timeout: Duration,
    /// After the store let a call time out (a cluster electing the
    /// bucket's leader), it is not asked again until then: every
    /// redelivery meanwhile starts at once from the broker's count instead
    /// of each waiting out the load limit in turn.
    out_of_reach_until: Mutex<Option<tokio::time::Instant>>,
    channel: Arc<str>,
}

impl std::fmt::Debug for AttemptLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptLedger")
            .field("channel", &self.channel)
            .field("entries", &self.entries.load(Ordering::Relaxed))
            .field("store", &self.store.is_some())
            .field("budget", &self.budget)
            .finish()
    }
}

impl AttemptLedger {
    /// The ledger of the subscriber of `spec`, kept in `store` when there is
    /// one and in this process's memory otherwise.
    pub(crate) fn new(store: Option<Arc<dyn AttemptStore>>, spec: &SubscriptionSpec) -> Self {
        Self {
            made: Mutex::default(),
            entries: AtomicUsize::new(0),
            capacity: CAPACITY,
            store,
            budget: spec.max_deliver,
            load_timeout: LOAD_TIMEOUT.min(spec.ack_wait / 2),
            out_of_reach_until: Mutex::new(None),
            channel: Arc::from(spec.channel.as_str()),
        }
    }

    /// Where a delivery starts when that is known without asking the store:
    /// always for a first delivery (attempt 1, no lock, no allocation), and
    /// for every delivery when there is no store. `None`: ask
    /// [`start_redelivery`](Self::start_redelivery).
    pub(crate) fn start(
        self: &Arc<Self>,
        sequence: u64,
        delivery_count: u32,
    ) -> Option<FirstAttempt> {
        if delivery_count <= 1 {
            return Some(FirstAttempt {
                attempt: 1,
                recorder: self.recorder(),
                spent: None,
            });
        }
        if self.store.is_some() {
            return None;
        }
        let first = self.continue_count(sequence, delivery_count, None);
        Some(self.first_attempt(first, AttemptRecorder::Unrecorded))
    }

    /// Where a redelivery starts when there is a store: one past the highest
    /// attempt the store or this process knows, at least the broker's
    /// delivery count. An attempt ahead of the delivery count is saved before
    /// it runs. When the store cannot be read, the delivery starts from what
    /// this process knows and its in-process retries stop.
    pub(crate) async fn start_redelivery(
        self: &Arc<Self>,
        sequence: u64,
        delivery_count: u32,
    ) -> FirstAttempt {
        let Some(store) = &self.store else {
            let first = self.continue_count(sequence, delivery_count, None);
            return self.first_attempt(first, AttemptRecorder::Unrecorded);
        };
        let loaded = if self.store_out_of_reach() {
            Err(LedgerError::StoreOutOfReach {
                channel: self.channel.to_string(),
                sequence,
                window: self.load_timeout,
            })
        } else {
            match tokio::time::timeout(self.load_timeout, store.load(sequence)).await {
                Ok(Ok(stored)) => Ok(stored),
                Ok(Err(source)) => Err(LedgerError::Load {
                    channel: self.channel.to_string(),
                    sequence,
                    source,
                }),
                Err(_) => {
                    self.store_timed_out();
                    Err(LedgerError::LoadTimedOut {
                        channel: self.channel.to_string(),
                        sequence,
                        after: self.load_timeout,
                    })
                }
            }
        };
        let stored = match loaded {
            Ok(stored) => stored,
            Err(err) => {
                tracing::warn!(error = %err, seq = sequence, delivery = delivery_count, "starting from the broker's delivery count and what this process knows; no in-process retries for this delivery");
                // Marked as recorded, so the store is told to forget it once settled.
                let first = self.continue_count(sequence, delivery_count, Some(0));
                return self.first_attempt(first, AttemptRecorder::Unavailable);
            }
        };
        let first = self.continue_count(sequence, delivery_count, stored);
        let within = self.budget.is_none_or(|budget| first <= budget);
        if first > delivery_count && within {
            // Ahead of the broker's count: only the store covers this attempt.
            let saved = tokio::time::timeout(self.load_timeout, self.save(sequence, first)).await;
            let failed = match saved {
                Ok(Ok(())) => None,
                Ok(Err(err)) => Some(err.to_string()),
                Err(_) => {
                    self.store_timed_out();
                    Some(format!("saving timed out after {:?}", self.load_timeout))
                }
            };
            if let Some(err) = failed {
                tracing::warn!(error = %err, seq = sequence, attempt = first, "the attempt runs unrecorded; no in-process retries for this delivery");
                return self.first_attempt(first, AttemptRecorder::Unavailable);
            }
        }
        self.first_attempt(first, self.recorder())
    }

    /// Records that attempt `attempt` of the message at `sequence` is about
    /// to run (or has been made), in the store and then here: an attempt
    /// whose save failed does not run (see [`AttemptRecorder::before_retry`]),
    /// so it is not remembered either.
    pub(crate) async fn save(&self, sequence: u64, attempt: u32) -> Result<(), BoxError> {
        let Some(store) = &self.store else {
            self.remember(sequence, attempt);
            return Ok(());
        };
        let highest = self
            .lock()
            .get(&sequence)
            .map_or(attempt, |&known| known.max(attempt));
        store.save(sequence, highest).await.map_err(|source| {
            Box::new(LedgerError::Save {
                channel: self.channel.to_string(),
                sequence,
                attempt: highest,
                source,
            }) as BoxError
        })?;
        self.remember(sequence, highest);
        Ok(())
    }

    /// Records the attempts made on a message going back to the broker (a
    /// nak). When the store cannot take them, the broker's delivery count
    /// (and this process's memory) bound the next delivery.
    pub(crate) async fn nakked(&self, sequence: u64, attempts: u32) {
        self.remember(sequence, attempts);
        if let Err(err) = self.save(sequence, attempts).await {
            tracing::warn!(error = %err, seq = sequence, attempts, "the next delivery counts from the broker's delivery count and this process's memory");
        }
    }

    /// The message at `sequence` is settled for good (acked or
    /// dead-lettered): drops its record. `None`, at the cost of one atomic
    /// read, for a message that never failed; otherwise a future that tells
    /// the store to forget it, waiting no longer than a load (a failure is
    /// logged: the record expires with the store's age limit).
    pub(crate) fn settled(&self, sequence: u64) -> Option<LedgerFuture<'_>> {
        if self.entries.load(Ordering::Acquire) == 0 {
            return None;
        }
        let removed = {
            let mut made = self.lock();
            let removed = made.remove(&sequence);
            self.entries.store(made.len(), Ordering::Release);
            removed
        };
        removed?;
        let store = self.store.as_ref()?;
        // Bounded like a load: while the store is out of reach (a cluster
        // electing leaders) the handler's slot is not held for it.
        Some(Box::pin(async move {
            let forgotten = if self.store_out_of_reach() {
                Err(format!(
                    "the store did not answer in time within the last {:?}",
                    self.load_timeout
                )
                .into())
            } else {
                tokio::time::timeout(self.load_timeout, store.forget(sequence))
                    .await
                    .unwrap_or_else(|_| {
                        self.store_timed_out();
                        Err(format!("no answer within {:?}", self.load_timeout).into())
                    })
            };
            if let Err(err) = forgotten {
                tracing::warn!(error = %err, channel = %self.channel, seq = sequence, "could not drop the attempt record of a settled message; it expires with the bucket's age limit");
            }
        }))
    }

    /// What the retry layer does before in-process retries of a delivery
    /// whose record is in order.
    fn recorder(self: &Arc<Self>) -> AttemptRecorder {
        match self.store {
            Some(_) => AttemptRecorder::Ledger(self.clone()),
            None => AttemptRecorder::Unrecorded,
        }
    }

    /// The first attempt of a redelivery: one past the highest attempt known
    /// (in memory, or `stored`), at least the delivery count. A message with
    /// a record, or one starting ahead of the count, is remembered at that
    /// attempt (it is started now).
    fn continue_count(&self, sequence: u64, delivery_count: u32, stored: Option<u32>) -> u32 {
        let mut made = self.lock();
        let known = made.get(&sequence).copied().max(stored);
        let first = known.map_or(delivery_count, |known| {
            delivery_count.max(known.saturating_add(1))
        });
        if known.is_some() || first > delivery_count {
            self.insert(&mut made, sequence, first);
        }
        first
    }

    /// Caps `first` at the budget: past it the delivery is settled without
    /// running the handler.
    fn first_attempt(&self, first: u32, recorder: AttemptRecorder) -> FirstAttempt {
        match self.budget {
            Some(budget) if first > budget => FirstAttempt {
                attempt: budget,
                recorder,
                spent: Some(budget),
            },
            _ => FirstAttempt {
                attempt: first,
                recorder,
                spent: None,
            },
        }
    }

    /// Remembers `attempt` for `sequence` unless a higher one is known;
    /// returns the highest.
    fn remember(&self, sequence: u64, attempt: u32) -> u32 {
        let mut made = self.lock();
        let highest = made
            .get(&sequence)
            .map_or(attempt, |&known| known.max(attempt));
        self.insert(&mut made, sequence, highest);
        highest
    }

    /// Sets the entry of `sequence`; at capacity a new entry first drops
    /// the entry of the lowest sequence (the oldest message).
    fn insert(&self, made: &mut BTreeMap<u64, u32>, sequence: u64, attempt: u32) {
        match made.entry(sequence) {
            Entry::Occupied(mut entry) => {
                entry.insert(attempt);
            }
            Entry::Vacant(entry) => {
                entry.insert(attempt);
                while made.len() > self.capacity {
                    made.pop_first();
                }
            }
        }
        self.entries.store(made.len(), Ordering::Release);
    }

    /// The map holds plain numbers: a panic elsewhere cannot leave it torn.
    /// Whether the store let a call time out less than a load limit ago.
    fn store_out_of_reach(&self) -> bool {
        let until = *self
            .out_of_reach_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        until.is_some_and(|until| tokio::time::Instant::now() < until)
    }

    /// The store let a call time out: leave it alone for one load limit.
    fn store_timed_out(&self) {
        let until = tokio::time::Instant::now() + self.load_timeout;
        *self
            .out_of_reach_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(until);
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, u32>> {
        self.made.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::AttemptFuture;
    use std::collections::HashMap;

    fn spec(max_deliver: u32) -> SubscriptionSpec {
        let mut spec = SubscriptionSpec::new("orders.placed").with_durable("billing");
        spec.max_deliver = Some(max_deliver);
        spec
    }

    fn in_memory(max_deliver: u32) -> Arc<AttemptLedger> {
        Arc::new(AttemptLedger::new(None, &spec(max_deliver)))
    }

    /// A store in a map, which can be told to fail.
    #[derive(Default)]
    struct MapStore {
        records: Mutex<HashMap<u64, u32>>,
        calls: AtomicUsize,
        failing: std::sync::atomic::AtomicBool,
    }

    impl MapStore {
        fn record(&self, sequence: u64) -> Option<u32> {
            self.records
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&sequence)
                .copied()
        }

        fn answer<T: Send + 'static>(&self, value: T) -> AttemptFuture<'_, T> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let failing = self.failing.load(Ordering::SeqCst);
            Box::pin(async move {
                if failing {
                    Err("bucket unreachable".into())
                } else {
                    Ok(value)
                }
            })
        }
    }

    impl AttemptStore for MapStore {
        fn load(&self, stream_sequence: u64) -> AttemptFuture<'_, Option<u32>> {
            let value = self.record(stream_sequence);
            self.answer(value)
        }

        fn save(&self, stream_sequence: u64, attempts: u32) -> AttemptFuture<'_, ()> {
            if !self.failing.load(Ordering::SeqCst) {
                self.records
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(stream_sequence, attempts);
            }
            self.answer(())
        }

        fn forget(&self, stream_sequence: u64) -> AttemptFuture<'_, ()> {
            if !self.failing.load(Ordering::SeqCst) {
                self.records
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&stream_sequence);
            }
            self.answer(())
        }
    }

    fn stored(store: &Arc<MapStore>, max_deliver: u32) -> Arc<AttemptLedger> {
        let store: Arc<dyn AttemptStore> = store.clone();
        Arc::new(AttemptLedger::new(Some(store), &spec(max_deliver)))
    }

    #[test]
    fn redelivery_continues_after_the_remembered_attempts() {
        let ledger = in_memory(10);
        let first = ledger.start(7, 1).expect("known");
        assert_eq!(first.attempt, 1);
        futures::executor::block_on(ledger.nakked(7, 4));
        assert_eq!(ledger.start(7, 2).expect("known").attempt, 5);
        // Attempt 5 started: a redelivery after it (say its handler was
        // abandoned) continues after it, not at the delivery count.
        assert_eq!(ledger.start(7, 3).expect("known").attempt, 6);
        assert!(ledger.settled(7).is_none(), "no store to tell");
        assert_eq!(
            ledger.start(7, 4).expect("known").attempt,
            4,
            "settled: forgotten"
        );
    }

    #[test]
    fn at_capacity_the_oldest_message_is_dropped() {
        let mut ledger = AttemptLedger::new(None, &spec(10));
        ledger.capacity = 4;
        let ledger = Arc::new(ledger);
        for sequence in [5, 3, 9, 7] {
            futures::executor::block_on(ledger.nakked(sequence, 2));
        }
        futures::executor::block_on(ledger.nakked(11, 2));
        assert_eq!(ledger.entries.load(Ordering::SeqCst), 4);
        // Sequence 3, the lowest, was dropped: its redelivery falls back to the count.
        assert_eq!(ledger.start(3, 2).expect("known").attempt, 2);
        for sequence in [5, 7, 9, 11] {
            assert_eq!(
                ledger.start(sequence, 2).expect("known").attempt,
                3,
                "seq {sequence} kept"
            );
        }
        // Updating a known entry at capacity drops nothing.
        futures::executor::block_on(ledger.nakked(5, 6));
        assert_eq!(ledger.start(7, 3).expect("known").attempt, 4);
    }

    #[test]
    fn a_first_delivery_never_asks_the_store() {
        let store = Arc::new(MapStore::default());
        let ledger = stored(&store, 10);
        let first = ledger.start(1, 1).expect("a first delivery is known");
        assert_eq!(first.attempt, 1);
        assert!(first.within_budget().is_ok());
        assert!(matches!(first.recorder, AttemptRecorder::Ledger(_)));
        assert!(ledger.settled(1).is_none(), "never failed: no store call");
        assert!(ledger.start(1, 2).is_none(), "a redelivery asks the store");
        assert_eq!(store.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn the_count_continues_from_the_store_across_processes() {
        let store = Arc::new(MapStore::default());
        // Process one: attempts 1 and 2 in-process, then killed during 3.
        let one = stored(&store, 10);
        let first = one.start(4, 1).expect("first delivery");
        first.recorder.before_retry(4, 2).await.expect("saved");
        first.recorder.before_retry(4, 3).await.expect("saved");
        assert_eq!(store.record(4), Some(3));
        // Process two gets delivery 2: attempt 3 started, so it runs 4,
        // saved before it runs (it is ahead of the delivery count).
        let two = stored(&store, 10);
        let first = two.start_redelivery(4, 2).await;
        assert_eq!(first.attempt, 4);
        assert_eq!(store.record(4), Some(4));
        // Killed again; delivery 3 to a third process starts at 5.
        let three = stored(&store, 10);
        assert_eq!(three.start_redelivery(4, 3).await.attempt, 5);
        // Acked: the record goes.
        three.settled(4).expect("had a record").await;
        assert_eq!(store.record(4), None);
    }

    #[tokio::test]
    async fn a_spent_budget_is_not_run_again() {
        let store = Arc::new(MapStore::default());
        store
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(9, 5);
        let ledger = stored(&store, 5);
        let first = ledger.start_redelivery(9, 2).await;
        assert_eq!(first.attempt, 5, "reported as the budget");
        let err = first.within_budget().expect_err("spent");
        assert!(err.to_string().contains("did not run again"), "{err}");
        assert_eq!(store.record(9), Some(5), "nothing saved for it");
    }

    #[tokio::test]
    async fn when_the_store_fails_in_process_retries_stop() {
        let store = Arc::new(MapStore::default());
        let ledger = stored(&store, 10);
        store.failing.store(true, Ordering::SeqCst);
        let first = ledger.start(2, 1).expect("first delivery");
        assert!(
            first.recorder.before_retry(2, 2).await.is_err(),
            "not saved: attempt 2 does not run"
        );
        let redelivered = ledger.start_redelivery(2, 2).await;
        assert_eq!(redelivered.attempt, 2, "the broker's delivery count");
        let err = redelivered
            .recorder
            .before_retry(2, 4)
            .await
            .expect_err("no in-process retries after a failed load");
        assert!(err.to_string().contains("no in-process retries"), "{err}");
    }
}
