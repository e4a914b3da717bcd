//! Flow: per-channel order, the max_in_flight high-water mark, headers and
//! de-duplication by message id.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowgate::{Headers, PublishOptions, StartPosition};

use super::apps::{acking, publish, publish_with, recording, start, stop};
use super::{Harness, Seen};

/// With `max_in_flight = 1` a channel's jobs are handled one at a time, in
/// publish order.
pub async fn order_with_max_in_flight_one<H: Harness>(harness: &H) {
    const N: u64 = 25;
    let nats = harness.connect().await;
    publish(&nats, 1..=N).await;
    let seen = Seen::new();
    let app = start(nats.clone(), acking(&seen).max_in_flight(1)).await;
    let calls = seen.wait_calls(N as usize).await;
    let ids: Vec<u64> = calls.iter().map(|c| c.id).collect();
    assert_eq!(ids, (1..=N).collect::<Vec<_>>());
    let sequences: Vec<u64> = calls.iter().map(|c| c.sequence).collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]));
    stop(app).await;
}

/// With `max_in_flight = 4` and slow handlers, exactly 4 run at once at the
/// busiest moment: the bound is reached and never passed.
pub async fn max_in_flight_high_water<H: Harness>(harness: &H) {
    const N: u64 = 24;
    const LIMIT: usize = 4;
    let nats = harness.connect().await;
    publish(&nats, 1..=N).await;
    let running = Arc::new(AtomicUsize::new(0));
    let high = Arc::new(AtomicUsize::new(0));
    let seen = Seen::new();
    let (now, most) = (running.clone(), high.clone());
    let subscriber = recording(&seen, 0, move |_| {
        let (now, most) = (now.clone(), most.clone());
        async move {
            let current = now.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(current, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await; // work
            now.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    })
    .start(StartPosition::All)
    .max_in_flight(LIMIT);
    let app = start(nats.clone(), subscriber).await;
    seen.wait_calls(N as usize).await;
    stop(app).await;
    assert_eq!(high.load(Ordering::SeqCst), LIMIT);
}

/// Headers sent with a message reach the handler, and so does the message
/// id (as `Nats-Msg-Id`).
pub async fn headers_round_trip<H: Harness>(harness: &H) {
    let nats = harness.connect().await;
    let seen = Seen::new();
    let app = start(nats.clone(), acking(&seen)).await;
    let mut headers = Headers::new();
    headers.insert("X-Conformance", "round trip");
    let options = PublishOptions::new().headers(headers).message_id("job-1");
    publish_with(&nats, 1, options).await;

    let calls = seen.wait_calls(1).await;
    let received = calls[0].headers.clone().expect("headers delivered");
    let value = |name: &str| received.get(name).map(|v| v.as_str().to_owned());
    assert_eq!(value("X-Conformance").as_deref(), Some("round trip"));
    assert_eq!(value("Nats-Msg-Id").as_deref(), Some("job-1"));
    stop(app).await;
}

/// A second publish with a message id already stored is dropped: the
/// receipt says so, and handlers see the job once.
pub async fn deduplication_by_message_id<H: Harness>(harness: &H) {
    let nats = harness.connect().await;
    let once = |id: &str| PublishOptions::new().message_id(id);
    let first = publish_with(&nats, 1, once("a")).await;
    let again = publish_with(&nats, 1, once("a")).await;
    let other = publish_with(&nats, 2, once("b")).await;
    assert!(!first.duplicate && again.duplicate && !other.duplicate);
    assert_eq!(again.sequence, first.sequence);
    assert_eq!(other.sequence, first.sequence + 1);

    let seen = Seen::new();
    // One at a time from the start: a stored duplicate would come before job 3.
    let app = start(nats.clone(), acking(&seen).max_in_flight(1)).await;
    publish(&nats, [3]).await;
    let calls = seen
        .wait_for("job 3", |calls| calls.iter().any(|c| c.id == 3))
        .await;
    let ids: Vec<u64> = calls.iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    stop(app).await;
}
