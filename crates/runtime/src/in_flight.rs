//! The `max_in_flight` bound of one subscriber, and the count of handlers
//! actually running under it.
//!
//! Taking room and giving it back is one atomic operation each; only a
//! dispatcher that has to wait for room, and shutdown waiting for the last
//! handler, wait on a [`Notify`], and room given back notifies only when one
//! of them may be waiting: the dispatcher when all room was taken, shutdown
//! once it has begun to wait.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Room for `limit` handlers. The dispatcher holds a [`Reserved`] while it
/// waits for the next delivery, so running handlers are counted apart.
#[derive(Debug)]
pub(crate) struct InFlight {
    /// Room taken: reserved by the dispatcher or held by a running handler.
    taken: AtomicUsize,
    running: AtomicUsize,
    limit: usize,
    /// Room was given back (the dispatcher may be waiting for some).
    freed: Notify,
    /// Nothing is taken any more (shutdown may be waiting for that).
    empty: Notify,
    /// Shutdown waits (or has waited) for `empty`.
    draining: AtomicBool,
}

/// Room for one handler, taken before the delivery it is for: given back
/// when dropped, unless a handler [starts](InFlight::start) with it.
#[derive(Debug)]
#[must_use]
pub(crate) struct Reserved<'a> {
    in_flight: &'a InFlight,
}

/// One running handler: gives its room back when dropped.
#[derive(Debug)]
pub(crate) struct Running {
    in_flight: Arc<InFlight>,
}

impl InFlight {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            taken: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            limit,
            freed: Notify::new(),
            empty: Notify::new(),
            draining: AtomicBool::new(false),
        })
    }

    /// Room for one more handler, if there is some right now.
    pub(crate) fn try_reserve(&self) -> Option<Reserved<'_>> {
        let mut taken = self.taken.load(Ordering::Acquire);
        loop {
            if taken >= self.limit {
                return None;
            }
            match self.taken.compare_exchange_weak(
                taken,
                taken + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(Reserved { in_flight: self }),
                Err(now) => taken = now,
            }
        }
    }

    /// Waits for room for one more handler. One caller at a time (the
    /// subscription's dispatcher): room given back wakes one waiter, and
    /// only when all room was taken.
    pub(crate) async fn reserve(&self) -> Reserved<'_> {
        loop {
            // Registered before looking, so room given back in between wakes it.
            let mut freed = pin!(self.freed.notified());
            freed.as_mut().enable();
            if let Some(reserved) = self.try_reserve() {
                return reserved;
            }
            freed.await;
        }
    }

    /// Counts a handler as running on `reserved` room until the returned
    /// guard drops.
    pub(crate) fn start(self: &Arc<Self>, reserved: Reserved<'_>) -> Running {
        // The room passes to the guard.
        std::mem::forget(reserved);
        self.running.fetch_add(1, Ordering::Relaxed);
        Running {
            in_flight: self.clone(),
        }
    }

    /// Handlers running now.
    pub(crate) fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// Resolves when all room is back: no handler runs, and the dispatcher
    /// holds none.
    pub(crate) async fn drained(&self) {
        // Before looking: room given back from now on notifies.
        self.draining.store(true, Ordering::SeqCst);
        loop {
            let mut empty = pin!(self.empty.notified());
            empty.as_mut().enable();
            if self.taken.load(Ordering::SeqCst) == 0 {
                return;
            }
            empty.await;
        }
    }

    fn give_back(&self) {
        let before = self.taken.fetch_sub(1, Ordering::SeqCst);
        if before == 1 && self.draining.load(Ordering::SeqCst) {
            self.empty.notify_waiters();
        }
        // A dispatcher waits for room only after finding all of it taken
        // (having registered first), so the first room given back after
        // that is given back from `limit`. Without a waiter this stores a
        // wake-up for the next wait, which then looks again.
        if before == self.limit {
            self.freed.notify_one();
        }
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.in_flight.give_back();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.in_flight.running.fetch_sub(1, Ordering::Relaxed);
        self.in_flight.give_back();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn room_is_bounded_and_comes_back_when_a_handler_ends() {
        let in_flight = InFlight::new(2);
        let first = in_flight.try_reserve().expect("room");
        let second = in_flight.try_reserve().expect("room");
        assert!(in_flight.try_reserve().is_none());
        drop(first);
        let running = in_flight.start(in_flight.try_reserve().expect("room given back"));
        assert_eq!(in_flight.running(), 1);
        let mut waiting = Box::pin(in_flight.reserve());
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        drop(running);
        assert_eq!(in_flight.running(), 0);
        let third = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiting dispatcher gets the room back");
        drop((second, third));
    }

    #[tokio::test]
    async fn drained_waits_for_the_last_handler_and_the_dispatchers_room() {
        let in_flight = InFlight::new(4);
        let running = in_flight.start(in_flight.try_reserve().expect("room"));
        let reserved = in_flight.try_reserve().expect("room");
        let mut drained = Box::pin(in_flight.drained());
        assert!(futures::poll!(drained.as_mut()).is_pending());
        drop(running);
        assert!(futures::poll!(drained.as_mut()).is_pending());
        drop(reserved);
        tokio::time::timeout(Duration::from_secs(5), drained)
            .await
            .expect("drained once nothing is taken");
    }
}
