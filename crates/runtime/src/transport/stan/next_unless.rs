//! The next message of a subscription, unless the loop reading it is to stop:
//! the stop signals are checked before every message, in order, as a biased
//! `select!` over them and the subscription would, but their waiters
//! (registering one costs a lock, a waker clone and, when dropped, its
//! removal) are polled only when no message is ready. The caller keeps the
//! waiters for as long as its loop runs, so once registered they stay
//! registered.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// A stop signal and its waiter (`token.cancelled()`, pinned by the caller).
pub(crate) type Stop<'a, 'p> = (
    &'a CancellationToken,
    Pin<&'p mut WaitForCancellationFuture<'a>>,
);

/// Polls for the next item of `stream`; `Err(i)` when `stops[i]` is
/// cancelled (the first of them, in order, checked before the stream).
pub(crate) fn poll_next_unless<S: Stream + Unpin>(
    cx: &mut Context<'_>,
    stream: &mut S,
    stops: &mut [Stop<'_, '_>],
) -> Poll<Result<Option<S::Item>, usize>> {
    if let Some(i) = stops.iter().position(|(token, _)| token.is_cancelled()) {
        return Poll::Ready(Err(i));
    }
    if let Poll::Ready(item) = stream.poll_next_unpin(cx) {
        return Poll::Ready(Ok(item));
    }
    for (i, (_, waiter)) in stops.iter_mut().enumerate() {
        if waiter.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(i));
        }
    }
    Poll::Pending
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::pin::pin;

    use super::*;

    async fn next<S: Stream + Unpin>(
        items: &mut S,
        stops: &mut [Stop<'_, '_>],
    ) -> Result<Option<S::Item>, usize> {
        poll_fn(|cx| poll_next_unless(cx, items, stops)).await
    }

    #[tokio::test]
    async fn stops_win_in_order_and_wake_a_waiting_loop() {
        let (first, second) = (CancellationToken::new(), CancellationToken::new());
        let mut first_waiter = pin!(first.cancelled());
        let mut second_waiter = pin!(second.cancelled());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let mut items = receiver_stream(rx);
        tx.send(1).expect("open");
        let got = next(
            &mut items,
            &mut [
                (&first, first_waiter.as_mut()),
                (&second, second_waiter.as_mut()),
            ],
        )
        .await;
        assert_eq!(got, Ok(Some(1)));
        // Nothing ready: the loop waits, and a stop wakes it.
        let stopper = {
            let second = second.clone();
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                second.cancel();
            })
        };
        let got = next(
            &mut items,
            &mut [
                (&first, first_waiter.as_mut()),
                (&second, second_waiter.as_mut()),
            ],
        )
        .await;
        assert_eq!(got, Err(1));
        stopper.await.expect("stopper");
        // A stop is seen before a ready item; the first one listed wins.
        tx.send(2).expect("open");
        first.cancel();
        let got = next(
            &mut items,
            &mut [
                (&first, first_waiter.as_mut()),
                (&second, second_waiter.as_mut()),
            ],
        )
        .await;
        assert_eq!(got, Err(0));
    }

    fn receiver_stream(
        rx: tokio::sync::mpsc::UnboundedReceiver<u32>,
    ) -> impl Stream<Item = u32> + Unpin {
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
            .boxed()
    }
}
