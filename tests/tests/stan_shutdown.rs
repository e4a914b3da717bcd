//! Graceful shutdown on NATS Streaming, against the protocol double over a
//! real nats-server: the acks of handlers still running when shutdown is
//! asked reach the server, because the subscription stays open until they
//! have settled (the server drops acks that come after a subscription ended).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowgate::{App, Publisher, Subscriber};
use flowgate_tests::{eventually, lock, JobError, DEADLINE};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "stan.shutdown")]
struct Job {
    id: u64,
}

const CHANNEL: &str = "stan.shutdown";
const IN_FLIGHT: u64 = 4;

/// A subscriber whose handlers record their id and wait for `released`.
fn held(
    started: Arc<Mutex<BTreeSet<u64>>>,
    released: tokio::sync::watch::Receiver<bool>,
) -> Subscriber {
    Subscriber::new(CHANNEL, move |job: Job| {
        let (started, mut released) = (started.clone(), released.clone());
        async move {
            lock(&started).insert(job.id);
            let _ = released.wait_for(|released| *released).await;
            Ok::<(), JobError>(())
        }
    })
    .durable("inflight")
    .max_in_flight(IN_FLIGHT as usize)
    .ack_wait(Duration::from_secs(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_keeps_the_subscription_until_running_handlers_acked() {
    let (_server, double, stan) =
        flowgate_tests::stan_double::start_with_client("shutdown-inflight").await;
    let started = Arc::new(Mutex::new(BTreeSet::new()));
    let (release, released) = tokio::sync::watch::channel(false);
    let app = App::new()
        .subscriber(held(started.clone(), released))
        .shutdown_timeout(Duration::from_secs(20))
        .start(stan.clone())
        .await
        .expect("app starts");
    let publisher = Publisher::new(stan.clone());
    for id in 1..=IN_FLIGHT {
        publisher.publish(&Job { id }).await.expect("published");
    }
    let running = eventually(DEADLINE, || async {
        lock(&started).len() as u64 == IN_FLIGHT
    })
    .await;
    assert!(running, "handlers running: {:?}", lock(&started));

    // Its first poll stops the app taking messages; then the handlers end OK.
    let mut shutdown = Box::pin(app.shutdown());
    assert!(futures::poll!(shutdown.as_mut()).is_pending());
    let _ = release.send(true);
    tokio::time::timeout(DEADLINE, shutdown)
        .await
        .expect("shutdown returns")
        .expect("clean shutdown");

    // The subscription ends after the handlers' acks, so none is dropped and
    // nothing is left for redelivery.
    let closed = eventually(DEADLINE, || async {
        double.active_subscriptions(CHANNEL) == 0
    })
    .await;
    assert!(closed, "the subscription was not closed on the server");
    assert!(double.has_durable(CHANNEL, "inflight"), "the durable stays");
    assert_eq!(
        double.ends_by_delivery_inbox(),
        0,
        "the close named the delivery inbox, which the real server does not know"
    );
    assert_eq!(
        double.dropped_acks(),
        0,
        "acks came after the subscription was closed"
    );
    assert_eq!(
        double.unacked(CHANNEL),
        0,
        "messages handled OK during shutdown are left for redelivery"
    );
    assert!(double.acks() >= IN_FLIGHT);
    stan.close().await.expect("closes");
}
