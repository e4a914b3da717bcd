//! The `max_in_flight` bound of one subscriber, and the count of handlers
//! actually running under it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Permits for `limit` handlers. The dispatcher holds one permit while it
/// waits for the next delivery, so running handlers are counted apart.
#[derive(Debug)]
pub(crate) struct InFlight {
    permits: Arc<Semaphore>,
    running: AtomicUsize,
    limit: usize,
}

/// One running handler: gives its permit back when dropped.
#[derive(Debug)]
pub(crate) struct Running {
    in_flight: Arc<InFlight>,
    _permit: OwnedSemaphorePermit,
}

impl InFlight {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(limit)),
            running: AtomicUsize::new(0),
            limit,
        })
    }

    /// Room for one more handler, if there is some right now.
    pub(crate) fn try_reserve(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// Waits for room for one more handler.
    pub(crate) async fn reserve(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().acquire_owned().await.ok()
    }

    /// Counts a handler as running until the returned guard drops.
    pub(crate) fn start(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Running {
        self.running.fetch_add(1, Ordering::Relaxed);
        Running {
            in_flight: self.clone(),
            _permit: permit,
        }
    }

    /// Handlers running now.
    pub(crate) fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// Resolves when every permit is back: no handler runs, none can start.
    pub(crate) async fn drained(&self) {
        let limit = u32::try_from(self.limit).unwrap_or(u32::MAX);
        let _all = self.permits.acquire_many(limit).await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.in_flight.running.fetch_sub(1, Ordering::Relaxed);
    }
}
