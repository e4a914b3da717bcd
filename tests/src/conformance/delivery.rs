//! Delivery and settlement: at-least-once, the ack floor, ack-wait expiry,
//! nak delays, term and max_deliver.

use std::collections::BTreeSet;
use std::time::Duration;

use flowgate::{Failure, StartPosition, SubscriptionSpec, Transport};
use futures::StreamExt;
use tokio::time::Instant;

use super::apps::{acking, publish, recording, start, stop};
use super::{Harness, Seen, ACK_WAIT, CHANNEL, DEADLINE, QUIET, SLACK};

/// Every one of N jobs is handled successfully at least once, also when
/// some fail on their first attempt.
pub async fn at_least_once<H: Harness>(harness: &H) {
    const N: u64 = 30;
    let nats = harness.connect().await;
    let seen = Seen::new();
    let handled = Seen::new();
    let ok = handled.clone();
    let subscriber = recording(&seen, 0, move |job| {
        let ok = ok.clone();
        async move {
            if job.id % 3 == 0 && job.attempt() == 1 {
                return Err(Failure::retryable(format!("job {} fails once", job.id)));
            }
            ok.record(&job, 0);
            Ok(())
        }
    });
    let app = start(nats.clone(), subscriber.start(StartPosition::All)).await;
    publish(&nats, 1..=N).await;

    let done = handled
        .wait_for("every job handled", |calls| {
            calls.iter().map(|c| c.id).collect::<BTreeSet<_>>().len() == N as usize
        })
        .await;
    let ids: BTreeSet<u64> = done.iter().map(|c| c.id).collect();
    assert_eq!(ids, (1..=N).collect());
    let failing = seen.calls().iter().filter(|c| c.id % 3 == 0).count();
    assert!(
        failing >= 2 * (N as usize / 3),
        "each failing job was tried again"
    );
    stop(app).await;
}

/// Everything acked: nothing is delivered again after the ack wait passes.
pub async fn ack_floor<H: Harness>(harness: &H) {
    const N: u64 = 20;
    let nats = harness.connect().await;
    let seen = Seen::new();
    let app = start(nats.clone(), acking(&seen)).await;
    publish(&nats, 1..=N).await;
    seen.wait_calls(N as usize).await;

    let calls = seen.after_quiet(QUIET).await;
    assert_eq!(
        calls.len(),
        N as usize,
        "a redelivery after every job was acked"
    );
    assert!(calls.iter().all(|c| c.delivery == 1));
    stop(app).await;
}

/// A delivery nobody settles is delivered again once the ack wait has
/// passed, with its delivery count grown by one. (On the transport contract
/// directly: an app sends progress acks for handlers that are still running.)
pub async fn redelivery_after_ack_wait<H: Harness>(harness: &H) {
    let nats = harness.connect().await;
    let mut spec = SubscriptionSpec::new(CHANNEL);
    spec.ack_wait = ACK_WAIT;
    let mut deliveries = nats.subscribe(&spec).await.expect("subscribed");
    publish(&nats, [1]).await;

    let first = tokio::time::timeout(DEADLINE, deliveries.next())
        .await
        .expect("a delivery")
        .expect("the subscription lives");
    let delivered = Instant::now();
    let again = tokio::time::timeout(DEADLINE, deliveries.next())
        .await
        .expect("a redelivery")
        .expect("the subscription lives");
    let waited = delivered.elapsed();
    assert_eq!(
        again.metadata.stream_sequence(),
        first.metadata.stream_sequence()
    );
    assert_eq!(
        (
            first.metadata.delivery_count(),
            again.metadata.delivery_count()
        ),
        (1, 2)
    );
    assert!(waited + SLACK >= ACK_WAIT, "redelivered after {waited:?}");
    assert!(
        waited < ACK_WAIT + Duration::from_secs(5),
        "redelivered only after {waited:?}"
    );
    flowgate::Acker::ack(&again.acker).await.expect("acked");
}

/// A nak with a delay is not redelivered before the delay.
pub async fn nak_delay_respected<H: Harness>(harness: &H) {
    const DELAY: Duration = Duration::from_millis(1500);
    let nats = harness.connect().await;
    let seen = Seen::new();
    let subscriber = recording(&seen, 0, |job| async move {
        match job.delivery_count() {
            1 => job.nak(Some(DELAY)).await.map_err(Failure::from),
            _ => job.ack().await.map_err(Failure::from),
        }
    })
    .manual_ack();
    let app = start(nats.clone(), subscriber).await;
    publish(&nats, [1]).await;

    let calls = seen.wait_calls(2).await;
    let gap = calls[1].at - calls[0].at;
    assert_eq!((calls[0].delivery, calls[1].delivery), (1, 2));
    assert!(
        gap >= DELAY,
        "redelivered {gap:?} after a nak asking for {DELAY:?}"
    );
    assert!(
        gap < DELAY + Duration::from_secs(5),
        "redelivered only after {gap:?}"
    );
    stop(app).await;
}

/// A terminated message is never delivered again.
pub async fn term_never_redelivered<H: Harness>(harness: &H) {
    let nats = harness.connect().await;
    let seen = Seen::new();
    let subscriber = recording(&seen, 0, |job| async move {
        job.term().await.map_err(Failure::from)
    })
    .manual_ack();
    let app = start(nats.clone(), subscriber).await;
    publish(&nats, [1]).await;
    seen.wait_calls(1).await;

    let calls = seen.after_quiet(QUIET).await;
    assert_eq!(calls.len(), 1, "a terminated message came back: {calls:?}");
    stop(app).await;
}

/// A message nak'd on every delivery is delivered `max_deliver` times, no more.
pub async fn max_deliver_respected<H: Harness>(harness: &H) {
    let nats = harness.connect().await;
    let seen = Seen::new();
    let subscriber = recording(&seen, 0, |job| async move {
        job.nak(None).await.map_err(Failure::from)
    })
    .manual_ack()
    .max_deliver(3);
    let app = start(nats.clone(), subscriber).await;
    publish(&nats, [1]).await;
    seen.wait_calls(3).await;

    let calls = seen.after_quiet(QUIET).await;
    let deliveries: Vec<u32> = calls.iter().map(|c| c.delivery).collect();
    assert_eq!(deliveries, vec![1, 2, 3]);
    stop(app).await;
}
