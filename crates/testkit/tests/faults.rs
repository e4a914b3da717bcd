//! Off the happy path, under the paused clock: the client's buffer at
//! shutdown, dead-letter publishes that fail, give-up notices nobody hears,
//! and the broker's record of attempts.

mod common;

use std::time::Duration;

use common::{billing, dead_letter_ids, publish_orders, settle, within, Order, Runs, CHANNEL};
use flowgate::{
    Acker, App, DeliveryStream, Failure, Message, StartPosition, Subscriber, SubscriptionSpec,
    Transport,
};
use flowgate_testkit::{Fault, InMemory, Outcome};
use futures::StreamExt;
use tokio::time::Instant;

const DEAD_LETTERS: &str = "dlq.orders.placed";

/// A subscriber of every order under the durable `billing`, as app `app`:
/// each run takes `work` (virtual time), records itself, and returns what
/// `outcome` says.
fn ok(_: &Message<Order>) -> Result<(), Failure> {
    Ok(())
}

async fn start(broker: &InMemory, subscriber: Subscriber) -> flowgate::RunningApp {
    App::new()
        .subscriber(subscriber)
        .start(broker.clone())
        .await
        .expect("app starts")
}

#[tokio::test(start_paused = true)]
async fn a_stopped_subscription_hands_back_its_buffer_and_pulls_nothing_more() {
    let broker = InMemory::new();
    publish_orders(&broker, 1..=10).await;
    let mut spec = SubscriptionSpec::new(CHANNEL).with_durable("raw");
    spec.start = StartPosition::All;
    spec.max_in_flight = 4;
    let mut first = broker.subscribe(&spec).await.expect("subscribed");
    let taken = within(first.next()).await.expect("a delivery");
    assert_eq!(taken.metadata.stream_sequence(), 1);
    let raw = broker.consumer_info(CHANNEL, "raw").expect("durable");
    assert_eq!(raw.pending, vec![1, 2, 3, 4], "a batch of 4 was delivered");

    let buffered = first.stop();
    let sequences: Vec<u64> = buffered
        .iter()
        .map(|d| d.metadata.stream_sequence())
        .collect();
    assert_eq!(sequences, vec![2, 3, 4]);
    for delivery in &buffered {
        delivery.acker.nak(None).await.expect("released");
    }
    taken.acker.ack().await.expect("acked");
    // The stopped subscription takes nothing more; another one gets the
    // released messages at once.
    let mut second = broker.subscribe(&spec).await.expect("subscribed");
    let started = Instant::now();
    let again = within(second.next()).await.expect("a delivery");
    assert_eq!(
        (
            again.metadata.stream_sequence(),
            again.metadata.delivery_count()
        ),
        (2, 2)
    );
    assert_eq!(started.elapsed(), Duration::ZERO, "no ack wait");
    let probe = second.ack_pending_probe().expect("a probe");
    assert_eq!(probe().await.expect("a count"), 4, "2, 3, 4 and 5 pending");
    assert!(tokio::time::timeout(Duration::from_secs(1), first.next())
        .await
        .is_err());
}

/// Issue 9, defect 7: deliveries buffered but never started are handed back
/// at shutdown and come again at once, not after the ack wait.
#[tokio::test(start_paused = true)]
async fn shutdown_hands_buffered_deliveries_back_so_they_come_again_at_once() {
    const WORK: Duration = Duration::from_secs(5);
    let broker = InMemory::new();
    publish_orders(&broker, 1..=6).await;
    let runs = Runs::new();
    // Coalesced acks: the consumer lets twice max_in_flight be unacked, so
    // 1 and 2 run while 3 and 4 wait in the client's buffer.
    let subscriber = |app, work| {
        billing(&runs, app, work, ok)
            .coalesced_acks()
            .max_in_flight(2)
    };
    let first = start(&broker, subscriber(1, WORK)).await;
    let buffered = broker.clone();
    within(broker.wait_until(move |_| {
        buffered
            .consumer_info(CHANNEL, "billing")
            .is_some_and(|c| c.pending == vec![1, 2, 3, 4])
    }))
    .await;
    first.shutdown().await.expect("clean shutdown");
    let log = broker.settlements(CHANNEL);
    let mut released: Vec<u64> = log
        .iter()
        .filter(|s| s.outcome == Outcome::Nakked { delay: None })
        .map(|s| s.sequence)
        .collect();
    released.sort_unstable();
    assert_eq!(released, vec![3, 4], "handed back");

    let restarted = Instant::now();
    let second = start(&broker, subscriber(2, Duration::ZERO)).await;
    let watched = runs.clone();
    within(broker.wait_until(move |_| (3..=6).all(|id| watched.times(id) == 1))).await;
    for id in [3, 4] {
        let runs = runs.of(id);
        assert_eq!(runs.len(), 1, "{id} handled once");
        assert_eq!((runs[0].app, runs[0].delivery), (2, 2));
        assert_eq!(runs[0].at, restarted, "{id} came again at once");
    }
    assert!(runs.of(1).iter().chain(&runs.of(2)).any(|run| run.app == 1));
    let expired = broker.settlements(CHANNEL).expired();
    assert!(!expired.contains(&3) && !expired.contains(&4));
    second.shutdown().await.expect("clean shutdown");
}

/// Issue 9, defect 5: a dead letter that cannot be published (a full
/// dead-letter stream) is retried while the original is kept alive; the
/// handler does not run again.
#[tokio::test(start_paused = true)]
async fn a_failed_dead_letter_publish_is_retried_while_the_original_stays_alive() {
    const ACK_WAIT: Duration = Duration::from_secs(2);
    const REFUSED: usize = 7;
    let broker = InMemory::new();
    broker.fail_publishes(DEAD_LETTERS, REFUSED);
    publish_orders(&broker, [1]).await;
    let runs = Runs::new();
    let refuse = |_: &Message<Order>| Err(Failure::permanent("never valid"));
    let app = start(
        &broker,
        billing(&runs, 0, Duration::ZERO, refuse)
            .ack_wait(ACK_WAIT)
            .max_deliver(2),
    )
    .await;
    let started = Instant::now();

    settle(&broker).await;
    assert_eq!(runs.times(1), 1, "the handler ran once");
    let refused = broker
        .faults()
        .iter()
        .filter(|f| matches!(f, Fault::Publish { subject } if subject == DEAD_LETTERS))
        .count();
    assert_eq!(refused, REFUSED);
    assert_eq!(dead_letter_ids(&broker), vec![1]);
    let log = broker.settlements(CHANNEL);
    let outcomes: Vec<Outcome> = log.of(1).iter().map(|s| s.outcome).collect();
    assert!(
        !outcomes.contains(&Outcome::Expired) && !outcomes.contains(&Outcome::Exhausted),
        "the original ran out meanwhile: {outcomes:?}"
    );
    assert!(outcomes.contains(&Outcome::InProgress), "kept alive");
    let last = log.of(1).last().copied().cloned().expect("settled");
    assert_eq!(
        (last.outcome, last.delivery_count),
        (Outcome::DeadLettered, 1)
    );
    assert!(
        last.at - started > 2 * ACK_WAIT,
        "retried for {:?}: the retries outlived the ack wait",
        last.at - started
    );
    app.shutdown().await.expect("clean shutdown");
}

/// The broker's give-up notice is JetStream's max-deliveries advisory: an
/// app that was not running when the broker gave up never hears of it.
#[tokio::test(start_paused = true)]
async fn a_give_up_while_no_app_runs_is_missed() {
    const ACK_WAIT: Duration = Duration::from_secs(2);
    let broker = InMemory::new();
    publish_orders(&broker, [1]).await;
    let runs = Runs::new();
    let subscriber = || {
        billing(&runs, 0, Duration::ZERO, ok)
            .ack_wait(ACK_WAIT)
            .max_deliver(1)
    };
    // An app takes the message and dies without settling it.
    let crashed = broker
        .subscribe(subscriber().spec())
        .await
        .expect("subscribed");
    let mut crashed = crashed;
    let taken = within(crashed.next()).await.expect("a delivery");
    drop(crashed);
    drop(taken);
    // No app runs while its only delivery's ack wait ends.
    tokio::time::advance(ACK_WAIT * 2).await;
    let gave_up = broker.consumer_info(CHANNEL, "billing").expect("durable");
    assert_eq!(gave_up.dead_lettered, vec![1], "the broker gave up");

    let app = start(&broker, subscriber()).await;
    settle(&broker).await;
    let dead_lettered = broker.clone();
    let heard = tokio::time::timeout(
        Duration::from_secs(60),
        broker.wait_until(move |_| !dead_letter_ids(&dead_lettered).is_empty()),
    )
    .await;
    assert!(
        heard.is_err(),
        "a notice given while no app ran was replayed"
    );
    assert_eq!(runs.times(1), 0);
    app.shutdown().await.expect("clean shutdown");
}

/// The other path to the dead letters: a message the broker gave up on while
/// the app listens, whose dead letter cannot be published at first.
#[tokio::test(start_paused = true)]
async fn a_give_up_whose_dead_letter_fails_is_retried() {
    let broker = InMemory::new();
    publish_orders(&broker, [1]).await;
    let runs = Runs::new();
    let subscriber = || {
        billing(&runs, 0, Duration::ZERO, ok)
            .ack_wait(Duration::from_secs(2))
            .max_deliver(1)
    };
    let mut crashed = broker
        .subscribe(subscriber().spec())
        .await
        .expect("subscribed");
    let taken = within(crashed.next()).await.expect("a delivery");
    broker.fail_publishes(DEAD_LETTERS, 3);
    let app = start(&broker, subscriber()).await;

    let dead_lettered = broker.clone();
    within(broker.wait_until(move |_| !dead_letter_ids(&dead_lettered).is_empty())).await;
    assert_eq!(dead_letter_ids(&broker), vec![1]);
    assert_eq!(broker.faults().len(), 3, "three refusals, then stored");
    assert_eq!(runs.times(1), 0, "the handler never had it");
    app.shutdown().await.expect("clean shutdown");
    drop((taken, crashed));
}

#[tokio::test(start_paused = true)]
async fn faults_take_effect_once_each_and_can_be_cleared() {
    let broker = InMemory::new();
    let mut spec = SubscriptionSpec::new(CHANNEL);
    spec.start = StartPosition::All;
    publish_orders(&broker, 1..=3).await;
    broker.fail_next_ack(CHANNEL);
    broker.fail_next_term(CHANNEL);
    broker.fail_naks(CHANNEL, 1);
    broker.fail_publishes("other.channel", 5);
    let mut deliveries = broker.subscribe(&spec).await.expect("subscribed");
    let one = within(deliveries.next()).await.expect("1");
    let two = within(deliveries.next()).await.expect("2");
    let three = within(deliveries.next()).await.expect("3");
    assert!(one.acker.ack().await.is_err());
    one.acker.ack().await.expect("the second ack works");
    assert!(two.acker.term().await.is_err());
    two.acker.term().await.expect("the second term works");
    assert!(three.acker.nak(None).await.is_err());
    three
        .acker
        .in_progress()
        .await
        .expect("progress never fails");
    broker.clear_faults();
    let publisher = flowgate::Publisher::new(broker.clone());
    publisher
        .publish_with(
            &Order { id: 9 },
            flowgate::PublishOptions::new().channel("other.channel"),
        )
        .await
        .expect("cleared");
    let channel = || CHANNEL.to_owned();
    assert_eq!(
        broker.faults(),
        vec![
            Fault::Ack {
                channel: channel(),
                sequence: 1
            },
            Fault::Term {
                channel: channel(),
                sequence: 2
            },
            Fault::Nak {
                channel: channel(),
                sequence: 3
            },
        ]
    );
    let log = broker.settlements(CHANNEL);
    assert_eq!((log.acked(), log.terminated()), (vec![1], vec![2]));
    assert!(log.nakked().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_store_that_stopped_answering_is_waited_for_once_not_by_every_redelivery() {
    let broker = InMemory::new();
    publish_orders(&broker, 1..=4).await;
    // Every first delivery is lost; when they come again, after the ack
    // wait, the attempt store answers nothing (a bucket electing its leader).
    broker.lose_next_deliveries(CHANNEL, 4);
    broker.stall_attempt_store(CHANNEL, 100);
    let runs = Runs::new();
    let subscriber = billing(&runs, 0, Duration::ZERO, ok).ack_wait(Duration::from_secs(10));
    let app = start(&broker, subscriber).await;
    let asked = |broker: &InMemory| {
        broker
            .faults()
            .iter()
            .filter(|fault| matches!(fault, Fault::AttemptStoreStalled { .. }))
            .count()
    };
    within(broker.wait_until(|broker| asked(broker) > 0)).await;
    let stalled_at = Instant::now();

    within(broker.wait_until(|broker| broker.settlements(CHANNEL).acked().len() == 4)).await;
    settle(&broker).await;
    // The four loads wait out one load limit (2 s) together; the records
    // are then not forgotten in a store that just did not answer, which
    // held each handler's slot for another 2 s.
    assert!(
        stalled_at.elapsed() < Duration::from_secs(3),
        "the redeliveries took {:?}",
        stalled_at.elapsed()
    );
    assert_eq!(
        asked(&broker),
        4,
        "the store is asked by the four loads only while it does not answer"
    );
    for id in 1..=4 {
        let ran: Vec<(u32, bool)> = runs
            .of(id)
            .iter()
            .map(|run| (run.delivery, run.ok))
            .collect();
        assert_eq!(
            ran,
            vec![(2, true)],
            "order {id}: once, from the broker's count"
        );
    }
    app.shutdown().await.expect("shut down");
}

#[tokio::test(start_paused = true)]
async fn the_ack_pending_count_includes_buffered_and_lost_deliveries() {
    let broker = InMemory::new();
    publish_orders(&broker, 1..=3).await;
    broker.lose_next_deliveries(CHANNEL, 1);
    let mut spec = SubscriptionSpec::new(CHANNEL).with_durable("counted");
    spec.start = StartPosition::All;
    spec.ack_wait = Duration::from_secs(5);
    let mut deliveries = broker.subscribe(&spec).await.expect("subscribed");
    let probe = deliveries.ack_pending_probe().expect("a probe");
    let two = within(deliveries.next()).await.expect("2");
    assert_eq!(two.metadata.consumer_sequence(), Some(2));
    assert_eq!(
        probe().await.expect("a count"),
        3,
        "1 lost, 2 taken, 3 buffered"
    );
    two.acker.ack().await.expect("acked");
    let three = within(deliveries.next()).await.expect("3");
    three.acker.ack().await.expect("acked");
    assert_eq!(probe().await.expect("a count"), 1, "the lost 1");
    let one = within(deliveries.next()).await.expect("1 again");
    assert_eq!(
        (
            one.metadata.stream_sequence(),
            one.metadata.consumer_sequence()
        ),
        (1, Some(4))
    );
    one.acker.ack().await.expect("acked");
    assert_eq!(probe().await.expect("a count"), 0);
    drop(deliveries);
    assert!(probe().await.is_ok(), "a durable outlives its subscription");
}

#[tokio::test]
async fn attempts_are_kept_per_channel_and_consumer_for_every_app() {
    let broker = InMemory::new();
    let durable = SubscriptionSpec::new(CHANNEL).with_durable("billing");
    let mut queue = SubscriptionSpec::new(CHANNEL);
    queue.queue = Some("workers".into());
    let store = |spec: SubscriptionSpec| {
        let broker = broker.clone();
        async move { broker.attempt_store(&spec).await.expect("no error") }
    };
    let one = store(durable.clone()).await.expect("a durable has a store");
    one.save(3, 2).await.expect("saved");
    // A second app (a restart, another instance) reads the same record.
    let two = store(durable.clone()).await.expect("the same store");
    assert_eq!(two.load(3).await.expect("loaded"), Some(2));
    two.save(3, 4).await.expect("saved");
    assert_eq!(one.load(3).await.expect("loaded"), Some(4));
    // Other consumers keep their own.
    let workers = store(queue).await.expect("a queue has a store");
    assert_eq!(workers.load(3).await.expect("loaded"), None);
    let elsewhere = store(SubscriptionSpec::new("other.channel").with_durable("billing"))
        .await
        .expect("a store");
    assert_eq!(elsewhere.load(3).await.expect("loaded"), None);
    assert!(
        store(SubscriptionSpec::new(CHANNEL)).await.is_none(),
        "ephemeral"
    );
    assert_eq!(
        broker
            .recorded_attempts(CHANNEL, "billing")
            .into_iter()
            .collect::<Vec<_>>(),
        vec![(3, 4)]
    );
    one.forget(3).await.expect("forgotten");
    assert!(broker.recorded_attempts(CHANNEL, "billing").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_redelivery_whose_attempt_record_does_not_load_holds_up_no_other_message() {
    let broker = InMemory::new();
    publish_orders(&broker, [1]).await;
    // Order 1's first delivery is lost; when it comes again, after the ack
    // wait, the load of its attempt record never answers (the runtime gives
    // up on it after 2 s, its own limit).
    broker.lose_next_deliveries(CHANNEL, 1);
    broker.stall_attempt_store(CHANNEL, 1);
    let runs = Runs::new();
    let subscriber = billing(&runs, 0, Duration::ZERO, ok).ack_wait(Duration::from_secs(10));
    let app = start(&broker, subscriber).await;
    let stalled = |broker: &InMemory| {
        broker.faults().contains(&Fault::AttemptStoreStalled {
            channel: CHANNEL.to_owned(),
            sequence: 1,
        })
    };
    within(broker.wait_until(stalled)).await;
    let stalled_at = Instant::now();

    // Orders published meanwhile are handled at once: the paused clock
    // moves only when nothing else can run, so a dispatcher waiting for
    // the load would leave them until its 2 s limit.
    publish_orders(&broker, 2..=4).await;
    within(broker.wait_until(|broker| {
        let acked = broker.settlements(CHANNEL).acked();
        [2, 3, 4].iter().all(|id| acked.contains(id))
    }))
    .await;
    assert!(
        stalled_at.elapsed() < Duration::from_secs(2),
        "orders 2 to 4 waited {:?} behind the redelivery of 1",
        stalled_at.elapsed()
    );
    assert_eq!(runs.times(1), 0, "1 still waits for its record");

    // Order 1 runs once its load gives up, counted from the broker's
    // delivery count, and is acked.
    settle(&broker).await;
    let ones = runs.of(1);
    assert_eq!(ones.len(), 1, "{ones:?}");
    assert_eq!((ones[0].delivery, ones[0].ok), (2, true));
    assert!(ones[0].at - stalled_at >= Duration::from_secs(2));
    let mut acked = broker.settlements(CHANNEL).acked();
    acked.sort_unstable();
    assert_eq!(acked, vec![1, 2, 3, 4]);
    app.shutdown().await.expect("shut down");
}

#[tokio::test(start_paused = true)]
async fn a_delivery_lost_while_the_window_is_full_comes_again_after_its_ack_wait() {
    let broker = InMemory::new();
    publish_orders(&broker, 1..=2).await;
    broker.lose_next_deliveries(CHANNEL, 2);
    let mut spec = SubscriptionSpec::new(CHANNEL).with_durable("raw");
    spec.start = StartPosition::All;
    spec.max_in_flight = 1;
    spec.ack_wait = Duration::from_secs(5);
    let started = Instant::now();
    let mut deliveries = broker.subscribe(&spec).await.expect("subscribed");
    // The lost delivery used up the client's pull: it asks again, and the
    // message comes once its ack wait has run out, twice (its redelivery
    // is lost too: the window of one holds nothing else).
    let one = within(deliveries.next()).await.expect("1 again");
    assert_eq!(
        (
            one.metadata.stream_sequence(),
            one.metadata.delivery_count()
        ),
        (1, 3)
    );
    assert!(
        started.elapsed() >= Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        broker.faults(),
        vec![
            Fault::LostDelivery {
                channel: CHANNEL.into(),
                sequence: 1,
                consumer_sequence: 1
            },
            Fault::LostDelivery {
                channel: CHANNEL.into(),
                sequence: 1,
                consumer_sequence: 2
            },
        ]
    );
    one.acker.ack().await.expect("acked");
    let two = within(deliveries.next()).await.expect("2");
    assert_eq!(
        (
            two.metadata.stream_sequence(),
            two.metadata.delivery_count()
        ),
        (2, 1)
    );
}
