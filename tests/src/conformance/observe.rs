//! What the handlers of a scenario saw, and waiting for it without sleeps.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use flowgate::{Headers, Message};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Job, DEADLINE};

/// One handler call.
#[derive(Debug, Clone)]
pub struct Call {
    /// The job's id.
    pub id: u64,
    /// The subject it was published on.
    pub subject: String,
    /// Its stream sequence.
    pub sequence: u64,
    /// Which delivery it was.
    pub delivery: u32,
    /// When the handler was called.
    pub at: Instant,
    /// The headers it carried.
    pub headers: Option<Headers>,
    /// Which app (member) handled it, for queue groups.
    pub member: usize,
}

/// Every handler call of a scenario, shared by its handlers and the test.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    calls: Arc<Mutex<Vec<Call>>>,
    changed: Arc<Notify>,
}

impl Seen {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a call of member `member` with `job`.
    pub fn record(&self, job: &Message<Job>, member: usize) -> Call {
        let call = Call {
            id: job.id,
            subject: job.subject().to_owned(),
            sequence: job.stream_sequence(),
            delivery: job.delivery_count(),
            at: Instant::now(),
            headers: job.metadata().headers().cloned(),
            member,
        };
        self.lock().push(call.clone());
        self.changed.notify_waiters();
        call
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().clone()
    }

    /// The ids of the calls so far, in call order.
    pub fn ids(&self) -> Vec<u64> {
        self.lock().iter().map(|c| c.id).collect()
    }

    /// Waits until `done` holds for the calls (at most [`DEADLINE`]) and
    /// returns them; panics with what was seen when it never does.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[Call]) -> bool) -> Vec<Call> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let calls = self.lock();
                if done(&calls) {
                    return calls.clone();
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!(
                    "waited {DEADLINE:?} for {what}; handlers saw (id, delivery): {:?}",
                    self.lock()
                        .iter()
                        .map(|c| (c.id, c.delivery))
                        .collect::<Vec<_>>()
                );
            }
        }
    }

    /// Waits until `n` calls were made.
    pub async fn wait_calls(&self, n: usize) -> Vec<Call> {
        self.wait_for(&format!("{n} handler calls"), |calls| calls.len() >= n)
            .await
    }

    /// Watches for `window` (something that must not happen must not happen
    /// in it), then returns every call.
    pub async fn after_quiet(&self, window: Duration) -> Vec<Call> {
        tokio::time::sleep(window).await;
        self.calls()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Call>> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
