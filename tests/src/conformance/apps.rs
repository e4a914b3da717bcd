//! Building the scenarios' subscribers and apps, and publishing jobs.

use std::future::Future;

use flowgate::{
    App, Failure, Message, PublishAck, PublishOptions, Publisher, RunningApp, StartPosition,
    Subscriber, Transport,
};

use super::{Job, Seen, ACK_WAIT, CHANNEL};

/// A subscriber of [`CHANNEL`] that records every call in `seen` as member
/// `member`, then answers with `answer` (the handler's outcome).
pub fn recording<F, Fut>(seen: &Seen, member: usize, answer: F) -> Subscriber
where
    F: Fn(Message<Job>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Failure>> + Send + 'static,
{
    let seen = seen.clone();
    let handler = move |job: Message<Job>| {
        seen.record(&job, member);
        answer(job)
    };
    Subscriber::new(CHANNEL, handler).ack_wait(ACK_WAIT)
}

/// A subscriber that records and acks, reading every job from the start.
pub fn acking(seen: &Seen) -> Subscriber {
    recording(seen, 0, |_| async { Ok(()) }).start(StartPosition::All)
}

/// Starts an app of one subscriber on `transport`.
pub async fn start<T: Transport>(transport: T, subscriber: Subscriber) -> RunningApp {
    App::new()
        .subscriber(subscriber)
        .start(transport)
        .await
        .unwrap_or_else(|e| panic!("the app does not start: {e}"))
}

/// Publishes jobs `ids` and waits for each receipt.
pub async fn publish<T: Transport>(transport: &T, ids: impl IntoIterator<Item = u64>) {
    for id in ids {
        publish_with(transport, id, PublishOptions::new()).await;
    }
}

/// Publishes job `id` with `options` and returns the broker's receipt.
pub async fn publish_with<T: Transport>(
    transport: &T,
    id: u64,
    options: PublishOptions,
) -> PublishAck {
    Publisher::new(transport.clone())
        .publish_with(&Job { id }, options)
        .await
        .unwrap_or_else(|e| panic!("publishing job {id}: {e}"))
}

/// Stops `app`, which must drain cleanly.
pub async fn stop(app: RunningApp) {
    app.shutdown()
        .await
        .unwrap_or_else(|e| panic!("the app does not shut down cleanly: {e}"));
}
