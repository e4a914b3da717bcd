//! Delivery and settlement through an `App` on the in-memory broker: acks,
//! naks, terms, ack-wait expiry, `max_deliver` and `max_in_flight`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{failure, publish_orders, settle, within, Handled, Log, Order, CHANNEL};
use flowgate::middleware::retry::RetryPolicy;
use flowgate::{Acker, App, Message, OutgoingMessage, StartPosition, Subscriber, Transport};
use flowgate_testkit::InMemory;
use futures::StreamExt;
use tokio::time::Instant;

/// A subscriber of every order on `CHANNEL` under the durable `name`.
fn durable(name: &str, subscriber: Subscriber) -> Subscriber {
    subscriber.durable(name).start(StartPosition::All)
}

#[tokio::test(start_paused = true)]
async fn every_published_message_is_handled_once_and_acked() {
    let broker = InMemory::new();
    publish_orders(&broker, 1..=50).await;
    let seen = Log::new();
    let log = seen.clone();
    let handler = move |order: Order| {
        let log = log.clone();
        async move {
            log.push(order.id);
            Handled::Ok(())
        }
    };
    let app = App::new()
        .subscriber(durable("billing", Subscriber::new(CHANNEL, handler)))
        .start(broker.clone())
        .await
        .expect("app starts");

    settle(&broker).await;
    let mut ids = seen.items();
    ids.sort_unstable();
    assert_eq!(ids, (1..=50).collect::<Vec<_>>());
    let billing = broker.consumer_info(CHANNEL, "billing").expect("durable");
    assert_eq!(billing.acked, (1..=50).collect::<Vec<_>>());
    assert_eq!(billing.ack_floor, 50);
    assert!(billing.pending.is_empty());
    assert!(billing.delivery_counts.values().all(|&count| count == 1));
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_failed_message_is_redelivered_with_count_two_then_acked() {
    let broker = InMemory::new();
    let attempts = Log::new();
    let log = attempts.clone();
    let handler = move |order: Message<Order>| {
        let log = log.clone();
        async move {
            log.push((
                order.stream_sequence(),
                order.delivery_count(),
                Instant::now(),
            ));
            if order.delivery_count() == 1 {
                return failure("first attempt fails");
            }
            Ok(())
        }
    };
    // Broker-only retries: the failure goes back to the broker as a nak.
    let app = App::new()
        .subscriber(
            durable("billing", Subscriber::new(CHANNEL, handler)).retry(RetryPolicy::broker_only()),
        )
        .start(broker.clone())
        .await
        .expect("app starts");
    publish_orders(&broker, [7]).await;

    settle(&broker).await;
    let attempts = attempts.items();
    assert_eq!(
        attempts
            .iter()
            .map(|&(seq, n, _)| (seq, n))
            .collect::<Vec<_>>(),
        vec![(1, 1), (1, 2)]
    );
    // The runtime naks the first failure with the backoff's first delay
    // (100 ms, ± 20 % jitter).
    assert!(attempts[1].2 - attempts[0].2 >= Duration::from_millis(80));
    let billing = broker.consumer_info(CHANNEL, "billing").expect("durable");
    assert_eq!(billing.acked, vec![1]);
    assert_eq!(billing.delivery_count(1), 2);
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_terminated_message_is_never_redelivered() {
    let broker = InMemory::new();
    let attempts = Arc::new(AtomicUsize::new(0));
    let count = attempts.clone();
    let handler = move |order: Order| {
        count.fetch_add(1, Ordering::SeqCst);
        async move { failure(&format!("order {} is never reached", order.id)) }
    };
    let manual_seen = Log::new();
    let log = manual_seen.clone();
    let terminating = move |order: Message<Order>| {
        let log = log.clone();
        async move {
            log.push(order.delivery_count());
            order.term().await.map_err(std::io::Error::other)
        }
    };
    let app = App::new()
        .subscriber(
            durable("decoder", Subscriber::new(CHANNEL, handler)).ack_wait(Duration::from_secs(5)),
        )
        .subscriber(
            durable("manual", Subscriber::new(CHANNEL, terminating))
                .manual_ack()
                .ack_wait(Duration::from_secs(5)),
        )
        .start(broker.clone())
        .await
        .expect("app starts");
    // Not an order: the first subscriber cannot decode it, so the runtime terminates it.
    broker
        .publish(OutgoingMessage::new(CHANNEL, "not json"))
        .await
        .expect("published")
        .await
        .expect("stored");

    settle(&broker).await;
    // Long past every ack wait: nothing comes back.
    tokio::time::advance(Duration::from_secs(60)).await;
    settle(&broker).await;
    assert_eq!(attempts.load(Ordering::SeqCst), 0, "the handler never runs");
    for name in ["decoder", "manual"] {
        let consumer = broker.consumer_info(CHANNEL, name).expect("durable");
        assert_eq!(consumer.terminated, vec![1], "{name}");
        assert_eq!(consumer.delivery_count(1), 1, "{name}");
        assert!(consumer.acked.is_empty(), "{name}");
        assert!(consumer.pending.is_empty(), "{name}");
    }
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn an_expired_ack_wait_redelivers() {
    let broker = InMemory::new();
    publish_orders(&broker, [1]).await;
    let mut spec = flowgate::SubscriptionSpec::new(CHANNEL).with_durable("forgetful");
    spec.start = StartPosition::All;
    spec.ack_wait = Duration::from_secs(2);
    let mut deliveries = broker.subscribe(&spec).await.expect("subscribed");
    let started = Instant::now();

    // Taken and never settled, like an app that died mid-work.
    let first = within(deliveries.next()).await.expect("delivery");
    assert_eq!(first.metadata.delivery_count(), 1);
    let again = within(deliveries.next()).await.expect("redelivery");
    assert_eq!(again.metadata.stream_sequence(), 1);
    assert_eq!(again.metadata.delivery_count(), 2);
    let waited = Instant::now() - started;
    assert!(
        waited >= Duration::from_secs(2),
        "redelivered after {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "redelivered after {waited:?}"
    );
    drop(first);
}

#[tokio::test(start_paused = true)]
async fn a_long_handler_is_kept_alive_by_progress_acks() {
    let broker = InMemory::new();
    let attempts = Log::new();
    let log = attempts.clone();
    let handler = move |order: Message<Order>| {
        let log = log.clone();
        async move {
            log.push(order.delivery_count());
            // Three ack waits of work: the runtime's progress acks hold the message.
            tokio::time::sleep(Duration::from_secs(6)).await;
            Ok::<_, std::io::Error>(())
        }
    };
    let app = App::new()
        .subscriber(
            durable("slow", Subscriber::new(CHANNEL, handler)).ack_wait(Duration::from_secs(2)),
        )
        .start(broker.clone())
        .await
        .expect("app starts");
    publish_orders(&broker, [1]).await;

    settle(&broker).await;
    assert_eq!(attempts.items(), vec![1], "handled once, never redelivered");
    let slow = broker.consumer_info(CHANNEL, "slow").expect("durable");
    assert_eq!(slow.acked, vec![1]);
    assert_eq!(slow.delivery_count(1), 1);
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn in_progress_restarts_the_ack_wait() {
    let broker = InMemory::new();
    let deliveries = Log::new();
    let log = deliveries.clone();
    let handler = move |order: Message<Order>| {
        let log = log.clone();
        async move {
            log.push(order.delivery_count());
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                order.in_progress().await.map_err(std::io::Error::other)?;
            }
            order.ack().await.map_err(std::io::Error::other)
        }
    };
    let app = App::new()
        .subscriber(
            durable("long", Subscriber::new(CHANNEL, handler))
                .manual_ack()
                .ack_wait(Duration::from_secs(2)),
        )
        .start(broker.clone())
        .await
        .expect("app starts");
    publish_orders(&broker, [1]).await;

    settle(&broker).await;
    assert_eq!(
        deliveries.items(),
        vec![1],
        "5 s of work, 2 s ack wait, no redelivery"
    );
    let long = broker.consumer_info(CHANNEL, "long").expect("durable");
    assert_eq!(long.acked, vec![1]);
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_is_dead_lettered_by_the_runtime() {
    let broker = InMemory::new();
    let attempts = Arc::new(AtomicUsize::new(0));
    let count = attempts.clone();
    let handler = move |_: Order| {
        count.fetch_add(1, Ordering::SeqCst);
        async { failure("always fails") }
    };
    let app = App::new()
        .subscriber(durable("flaky", Subscriber::new(CHANNEL, handler)).max_deliver(3))
        .start(broker.clone())
        .await
        .expect("app starts");
    publish_orders(&broker, [1, 2]).await;

    settle(&broker).await;
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        6,
        "the budget of 3 attempts for each of 2 messages"
    );
    let flaky = broker.consumer_info(CHANNEL, "flaky").expect("durable");
    let mut terminated = flaky.terminated.clone();
    terminated.sort_unstable();
    assert_eq!(terminated, vec![1, 2], "terminated after dead-lettering");
    assert!(flaky.pending.is_empty() && flaky.acked.is_empty());
    let dead: Vec<Order> = broker
        .published_on(&format!("dlq.{CHANNEL}"))
        .expect("dead letters decode");
    let mut ids: Vec<u64> = dead.iter().map(|o| o.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2], "one dead letter each");
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn the_broker_stops_redelivering_at_max_deliver() {
    let broker = InMemory::new();
    publish_orders(&broker, [1]).await;
    let mut spec = flowgate::SubscriptionSpec::new(CHANNEL).with_durable("raw-flaky");
    spec.start = StartPosition::All;
    spec.max_deliver = Some(3);
    let mut deliveries = broker.subscribe(&spec).await.expect("subscribed");
    for count in 1..=3 {
        let delivery = within(deliveries.next()).await.expect("delivery");
        assert_eq!(delivery.metadata.delivery_count(), count);
        delivery.acker.nak(None).await.expect("nak'd");
    }
    let fourth = tokio::time::timeout(Duration::from_secs(120), deliveries.next()).await;
    assert!(fourth.is_err(), "no fourth delivery");
    let raw = broker.consumer_info(CHANNEL, "raw-flaky").expect("durable");
    assert_eq!(raw.dead_lettered, vec![1], "the broker gave up on it");
}

#[tokio::test(start_paused = true)]
async fn max_in_flight_bounds_running_handlers() {
    const LIMIT: usize = 4;
    let broker = InMemory::new();
    publish_orders(&broker, 1..=20).await;
    let running = Arc::new(AtomicUsize::new(0));
    let high_water = Arc::new(AtomicUsize::new(0));
    let (now, peak) = (running.clone(), high_water.clone());
    let handler = move |_: Order| {
        let (now, peak) = (now.clone(), peak.clone());
        async move {
            let current = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(current, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(500)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            Handled::Ok(())
        }
    };
    let app = App::new()
        .subscriber(durable("bounded", Subscriber::new(CHANNEL, handler)).max_in_flight(LIMIT))
        .start(broker.clone())
        .await
        .expect("app starts");

    settle(&broker).await;
    assert_eq!(high_water.load(Ordering::SeqCst), LIMIT);
    let bounded = broker.consumer_info(CHANNEL, "bounded").expect("durable");
    assert_eq!(bounded.acked.len(), 20);
    assert_eq!(bounded.pending_high_water, LIMIT);
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn the_broker_holds_back_new_messages_at_max_in_flight() {
    let broker = InMemory::new();
    publish_orders(&broker, 1..=5).await;
    let mut spec = flowgate::SubscriptionSpec::new(CHANNEL).with_durable("raw");
    spec.start = StartPosition::All;
    spec.max_in_flight = 2;
    let mut deliveries = broker.subscribe(&spec).await.expect("subscribed");

    let first = within(deliveries.next()).await.expect("delivery");
    let second = within(deliveries.next()).await.expect("delivery");
    assert_eq!(
        (
            first.metadata.stream_sequence(),
            second.metadata.stream_sequence()
        ),
        (1, 2)
    );
    // Two unsettled: the third waits (here for less than the ack wait).
    let held = tokio::time::timeout(Duration::from_secs(10), deliveries.next()).await;
    assert!(
        held.is_err(),
        "a third message was delivered with two pending"
    );

    first.acker.ack().await.expect("acked");
    let third = within(deliveries.next()).await.expect("delivery");
    assert_eq!(third.metadata.stream_sequence(), 3);

    // A redelivery is not held back: the nak'd message comes first.
    second.acker.nak(None).await.expect("nak'd");
    let again = within(deliveries.next()).await.expect("delivery");
    assert_eq!(
        (
            again.metadata.stream_sequence(),
            again.metadata.delivery_count()
        ),
        (2, 2)
    );
}

#[tokio::test(start_paused = true)]
async fn deliveries_that_run_out_unsettled_reach_the_dead_letters() {
    let broker = InMemory::new();
    publish_orders(&broker, [9]).await;
    let subscriber = || {
        durable(
            "survivor",
            Subscriber::new(CHANNEL, |_: Order| async { Ok::<_, std::io::Error>(()) }),
        )
        .max_deliver(1)
        .ack_wait(Duration::from_secs(2))
    };
    // An app that takes the message and dies without settling it.
    let mut spec = subscriber().spec().clone();
    spec.start = StartPosition::All;
    let mut crashed = broker.subscribe(&spec).await.expect("subscribed");
    let taken = within(crashed.next()).await.expect("delivery");
    assert_eq!(taken.metadata.stream_sequence(), 1);

    // The running app learns from the broker that it gave up, and dead-letters it.
    let app = App::new()
        .subscriber(subscriber())
        .start(broker.clone())
        .await
        .expect("app starts");
    within(broker.wait_until(|b| !b.channel_messages(&format!("dlq.{CHANNEL}")).is_empty())).await;
    let letters = broker.channel_messages(&format!("dlq.{CHANNEL}"));
    assert_eq!(letters.len(), 1);
    let headers = letters[0].headers.as_ref().expect("headers");
    assert_eq!(
        headers
            .get(flowgate::dead_letter::ATTEMPTS)
            .map(|v| v.as_str()),
        Some("1")
    );
    assert!(headers
        .get(flowgate::dead_letter::LAST_ERROR)
        .is_some_and(|v| v.as_str().contains("max deliveries")));
    app.shutdown().await.expect("clean shutdown");
    drop(taken);
}

/// The broker's side of a subscription runs on a task of its own: on a
/// multi-threaded runtime it fills the client's buffer while the app takes
/// from it on another thread, and nothing is lost or handled twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_threaded_runtime_delivers_every_message_once() {
    const N: u64 = 2000;
    let broker = InMemory::new();
    publish_orders(&broker, 1..=N).await;
    let seen = Log::new();
    for (name, coalesced) in [("auto", false), ("coalesced", true)] {
        let log = seen.clone();
        let handler = move |order: Message<Order>| {
            let log = log.clone();
            async move {
                tokio::task::yield_now().await;
                log.push((name, order.stream_sequence()));
                Handled::Ok(())
            }
        };
        let mut subscriber = durable(name, Subscriber::new(CHANNEL, handler)).max_in_flight(64);
        if coalesced {
            subscriber = subscriber.coalesced_acks();
        }
        let app = App::new()
            .subscriber(subscriber)
            .start(broker.clone())
            .await
            .expect("app starts");
        tokio::time::timeout(Duration::from_secs(60), broker.wait_idle())
            .await
            .expect("settled");
        app.shutdown().await.expect("clean shutdown");
        let consumer = broker.consumer_info(CHANNEL, name).expect("durable");
        assert_eq!(consumer.acked.len(), N as usize, "{name}");
        let mut handled: Vec<u64> = seen
            .items()
            .iter()
            .filter(|(by, _)| *by == name)
            .map(|(_, sequence)| *sequence)
            .collect();
        handled.sort_unstable();
        assert_eq!(
            handled,
            (1..=N).collect::<Vec<_>>(),
            "{name}: each handled once"
        );
    }
}

/// Where OpenTelemetry knows no span (no `opentelemetry` feature, or no
/// layer), trace headers pass through untouched: the handler sees the
/// publisher's `traceparent`, and the dead letter keeps it.
#[tokio::test(start_paused = true)]
async fn trace_headers_pass_through_to_the_handler_and_into_the_dead_letter() {
    use flowgate::trace_context::{TRACEPARENT, TRACESTATE};
    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let broker = InMemory::new();
    let seen = Log::new();
    let log = seen.clone();
    let handler = move |order: Message<Order>| {
        let log = log.clone();
        async move {
            let traceparent = order.metadata().headers().and_then(|h| h.get(TRACEPARENT));
            if traceparent.map(|v| v.as_str()) == Some(PARENT) {
                log.push(order.id);
            }
            failure("declined")
        }
    };
    let app = App::new()
        .subscriber(
            durable("traced", Subscriber::new(CHANNEL, handler))
                .max_deliver(1)
                .retry(RetryPolicy::broker_only()),
        )
        .start(broker.clone())
        .await
        .expect("app starts");
    let mut headers = flowgate::Headers::new();
    headers.insert(TRACEPARENT, PARENT);
    headers.insert(TRACESTATE, "vendor=1");
    flowgate::Publisher::new(broker.clone())
        .publish_with(
            &Order { id: 4 },
            flowgate::PublishOptions::new().headers(headers),
        )
        .await
        .expect("stored");
    within(broker.wait_until(|b| !b.channel_messages(&format!("dlq.{CHANNEL}")).is_empty())).await;
    app.shutdown().await.expect("clean shutdown");
    assert_eq!(
        seen.items(),
        vec![4],
        "the handler saw the publisher's traceparent"
    );
    let letters = broker.channel_messages(&format!("dlq.{CHANNEL}"));
    let headers = letters[0].headers.as_ref().expect("headers");
    assert_eq!(headers.get(TRACEPARENT).map(|v| v.as_str()), Some(PARENT));
    assert_eq!(
        headers.get(TRACESTATE).map(|v| v.as_str()),
        Some("vendor=1")
    );
}
