//! Deliveries the dispatcher took from the transport while it waited for room
//! (a `max_in_flight` permit, or a layer's readiness). A pull consumer hands
//! the client a batch at once, and the broker's ack wait runs for every
//! message in it; parked here, they get progress acks until a handler takes
//! them, so waiting for room never makes the broker redeliver them.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::{Acker, Delivery, DeliveryStream};

/// Deliveries waiting for room, oldest first.
#[derive(Debug)]
pub(crate) struct Parked<A> {
    queue: VecDeque<Delivery<A>>,
    /// The transport's stream ended while parking.
    ended: bool,
    progress_every: Duration,
}

impl<A: Acker> Parked<A> {
    pub(crate) fn new(progress_every: Duration) -> Self {
        Self {
            queue: VecDeque::new(),
            ended: false,
            progress_every,
        }
    }

    /// The oldest parked delivery.
    pub(crate) fn take(&mut self) -> Option<Delivery<A>> {
        self.queue.pop_front()
    }

    /// Whether the transport's stream ended and nothing is parked.
    pub(crate) fn exhausted(&self) -> bool {
        self.ended && self.queue.is_empty()
    }

    /// Everything parked, for handing back at shutdown.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Delivery<A>> + '_ {
        self.queue.drain(..)
    }

    /// Waits for `wait`, parking what `deliveries` yields meanwhile and
    /// sending progress acks for everything parked each `progress_every`.
    /// `None` when `stop` came first.
    pub(crate) async fn wait_for<F: Future>(
        &mut self,
        wait: F,
        deliveries: &mut impl DeliveryStream<A>,
        stop: &CancellationToken,
    ) -> Option<F::Output> {
        let mut wait = pin!(wait);
        let tick = tokio::time::sleep(self.progress_every);
        let mut tick = pin!(tick);
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return None,
                done = wait.as_mut() => return Some(done),
                delivery = deliveries.next(), if !self.ended => match delivery {
                    Some(delivery) => self.queue.push_back(delivery),
                    None => self.ended = true,
                },
                _ = tick.as_mut() => {
                    for delivery in &self.queue {
                        if let Err(err) = delivery.acker.in_progress().await {
                            tracing::debug!(error = %err, "progress ack of a parked delivery failed");
                        }
                    }
                    tick.as_mut().reset(tokio::time::Instant::now() + self.progress_every);
                }
            }
        }
    }
}
