//! Handler futures in reused allocations.
//!
//! A subscriber's handler is type-erased, so each call's future lives behind
//! a pointer. Instead of allocating it for every message and freeing it when
//! the handler returns, each handler keeps the allocations of its finished
//! calls (up to [`KEPT`]) and puts the next call's future into one of them.
//! Every message handled inline by the dispatcher reuses the same one.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use crate::handler::panicked;
use crate::BoxError;

/// The most finished slots a handler keeps for reuse: beyond this many calls
/// running at once, the extra slots are freed when their calls end.
const KEPT: usize = 64;

/// The finished slots of one handler, for its next calls.
pub(crate) struct Slots<F> {
    free: Mutex<Vec<Pin<Box<Slot<F>>>>>,
}

impl<F> Default for Slots<F> {
    fn default() -> Self {
        Self {
            free: Mutex::new(Vec::new()),
        }
    }
}

impl<F> Slots<F>
where
    F: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    /// `call` in a slot of its own: a finished one when there is one.
    pub(crate) fn start(self: &Arc<Self>, call: F) -> HandlerCall {
        let reused = self.free.lock().ok().and_then(|mut free| free.pop());
        let mut slot = reused.unwrap_or_else(|| {
            Box::pin(Slot {
                call: None,
                slots: Arc::downgrade(self),
            })
        });
        slot.as_mut().project().call.set(Some(call));
        HandlerCall(Some(slot))
    }
}

pin_project_lite::pin_project! {
    /// Where one call's future lives; empty while it waits for reuse.
    struct Slot<F> {
        #[pin]
        call: Option<F>,
        // Weak: the free slots must not keep their handler's `Slots` alive.
        slots: Weak<Slots<F>>,
    }
}

/// A slot as the erased call sees it.
trait RunningCall: Send {
    /// Polls the call; a panic in it is the call's failure.
    fn poll_call(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>>;

    /// Drops what is left of the call and keeps the slot for the next one.
    fn recycle(self: Pin<Box<Self>>);
}

impl<F> RunningCall for Slot<F>
where
    F: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    fn poll_call(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let Some(call) = self.project().call.as_pin_mut() else {
            return Poll::Ready(Err(Box::new(crate::HandlerError::Panicked(
                "a handler call was polled after it ended".to_owned(),
            ))));
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| call.poll(cx))) {
            Ok(polled) => polled,
            Err(panic) => Poll::Ready(Err(panicked(&*panic))),
        }
    }

    fn recycle(mut self: Pin<Box<Self>>) {
        // The call's own drop may panic: then the slot is simply freed.
        let emptied =
            std::panic::catch_unwind(AssertUnwindSafe(|| self.as_mut().project().call.set(None)));
        if emptied.is_err() {
            return;
        }
        let Some(slots) = self.slots.upgrade() else {
            return;
        };
        let Ok(mut free) = slots.free.lock() else {
            return;
        };
        if free.len() < KEPT {
            free.push(self);
        }
        drop(free);
    }
}

/// One call of a handler, running in its slot (see the module docs).
pub(crate) struct HandlerCall(Option<Pin<Box<dyn RunningCall>>>);

impl Future for HandlerCall {
    type Output = Result<(), BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.0.as_mut() {
            Some(slot) => slot.as_mut().poll_call(cx),
            None => Poll::Pending,
        }
    }
}

impl Drop for HandlerCall {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.recycle();
        }
    }
}

impl std::fmt::Debug for HandlerCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerCall").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    type Call = futures::future::Ready<Result<(), BoxError>>;

    fn slot_address(call: &HandlerCall) -> *const () {
        let slot = call.0.as_ref().expect("a running call has its slot");
        (&**slot as *const dyn RunningCall).cast()
    }

    #[test]
    fn a_finished_call_leaves_its_slot_to_the_next() {
        let slots = Arc::new(Slots::<Call>::default());
        let first = slots.start(futures::future::ready(Ok(())));
        let address = slot_address(&first);
        assert!(matches!(first.now_or_never(), Some(Ok(()))));
        let second = slots.start(futures::future::ready(Err("no".into())));
        assert_eq!(slot_address(&second), address, "the slot is reused");
        assert!(matches!(second.now_or_never(), Some(Err(_))));
    }

    #[test]
    fn calls_running_at_once_each_get_a_slot_and_at_most_kept_stay() {
        let slots = Arc::new(Slots::<Call>::default());
        let running: Vec<_> = (0..KEPT + 10)
            .map(|_| slots.start(futures::future::ready(Ok(()))))
            .collect();
        let mut addresses: Vec<_> = running.iter().map(slot_address).collect();
        addresses.sort_unstable();
        addresses.dedup();
        assert_eq!(addresses.len(), KEPT + 10, "no slot is shared");
        drop(running);
        let free = slots.free.lock().expect("not poisoned").len();
        assert_eq!(free, KEPT);
        let weak = Arc::downgrade(&slots);
        drop(slots);
        assert!(weak.upgrade().is_none(), "the free slots keep no cycle");
    }

    #[test]
    fn a_panicking_call_fails_and_its_slot_is_reused() {
        type Panicking = futures::future::BoxFuture<'static, Result<(), BoxError>>;
        let slots = Arc::new(Slots::<Panicking>::default());
        let call = slots.start(Box::pin(async { panic!("boom") }));
        let address = slot_address(&call);
        let outcome = call.now_or_never().expect("done at once");
        let err = outcome.expect_err("a panic is a failure");
        assert!(err.to_string().contains("boom"), "{err}");
        let next = slots.start(Box::pin(async { Ok(()) }));
        assert_eq!(slot_address(&next), address);
    }
}
