//! Coalesced acks (`ack = "coalesced"`, JetStream's ack policy "all")
//! through an `App` on the in-memory broker, under the paused clock: fewer
//! acks, never one past a message that is failing or was lost in transit,
//! handled messages kept alive behind a failing one, a second instance.

mod common;

use std::time::Duration;

use common::{
    assert_nothing_acked_unhandled, billing, dead_letter_ids, publish_orders, settle, within,
    Order, Runs, CHANNEL,
};
use flowgate::{
    Acker, App, DeliveryStream, Failure, Message, StartPosition, Subscriber, SubscriptionSpec,
    Transport,
};
use flowgate_testkit::{Fault, InMemory, Outcome};
use futures::StreamExt;

/// A coalescing subscriber of every order under the durable `billing`, as
/// app `app`: each run records itself in `runs` after `work` (virtual time),
/// and returns what `outcome` says.
fn coalescing<F>(runs: &Runs, app: usize, work: Duration, outcome: F) -> Subscriber
where
    F: Fn(&Message<Order>) -> Result<(), Failure> + Clone + Send + Sync + 'static,
{
    billing(runs, app, work, outcome).coalesced_acks()
}

fn ok(_: &Message<Order>) -> Result<(), Failure> {
    Ok(())
}

/// [`assert_nothing_acked_unhandled`] for the sequences from `first` on
/// (the ones before were handled outside an app).
fn assert_nothing_acked_unhandled_from(broker: &InMemory, runs: &Runs, first: u64) {
    let log = broker.settlements(CHANNEL);
    for settlement in log
        .iter()
        .filter(|s| s.outcome == Outcome::Acked && s.sequence >= first)
    {
        let handled = runs
            .items()
            .iter()
            .any(|run| run.ok && run.sequence == settlement.sequence && run.at <= settlement.at);
        assert!(
            handled,
            "{} acked before it was handled",
            settlement.sequence
        );
    }
}

async fn start(broker: &InMemory, subscriber: Subscriber) -> flowgate::RunningApp {
    App::new()
        .subscriber(subscriber)
        .start(broker.clone())
        .await
        .expect("app starts")
}

#[tokio::test(start_paused = true)]
async fn coalesced_acks_settle_everything_with_fewer_acks() {
    const N: u64 = 100;
    let broker = InMemory::new();
    publish_orders(&broker, 1..=N).await;
    let runs = Runs::new();
    let app = start(
        &broker,
        coalescing(&runs, 0, Duration::ZERO, ok).max_in_flight(16),
    )
    .await;

    settle(&broker).await;
    let log = broker.settlements(CHANNEL);
    let mut acked = log.acked();
    acked.sort_unstable();
    assert_eq!(
        acked,
        (1..=N).collect::<Vec<_>>(),
        "every message acked once"
    );
    let acks = log.acked_directly().len();
    assert!(
        acks <= N as usize / 2,
        "{acks} acks for {N} messages: coalescing saved nothing"
    );
    assert!((1..=N).all(|id| runs.times(id) == 1), "each handled once");
    let billing = broker.consumer_info(CHANNEL, "billing").expect("durable");
    assert!(billing.acks_all, "ack policy all");
    assert_eq!(billing.max_ack_pending, 32, "twice max_in_flight");
    assert!(billing.pending.is_empty());
    assert_nothing_acked_unhandled(&broker, &runs);
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn coalesced_acks_never_pass_a_failing_message() {
    let broker = InMemory::new();
    publish_orders(&broker, 1..=6).await;
    let runs = Runs::new();
    // Order 2 fails its first two attempts, asking for 5 s each time.
    let flaky = |order: &Message<Order>| {
        if order.id == 2 && order.attempt() < 3 {
            return Err(Failure::retry_after(Duration::from_secs(5), "not yet"));
        }
        Ok(())
    };
    let app = start(
        &broker,
        coalescing(&runs, 0, Duration::ZERO, flaky).max_deliver(5),
    )
    .await;

    // While 2 is failing, the handled 3..=6 wait: nothing past 2 is acked.
    let watched = runs.clone();
    within(broker.wait_until(move |_| watched.times(2) == 2)).await;
    let billing = broker.consumer_info(CHANNEL, "billing").expect("durable");
    assert!(
        billing.acked.iter().all(|&sequence| sequence < 2),
        "acked past the failing 2: {:?}",
        billing.acked
    );
    assert_eq!(billing.pending, vec![2, 3, 4, 5, 6]);
    assert!((3..=6).all(|id| runs.times(id) == 1));

    settle(&broker).await;
    assert_eq!(runs.times(2), 3);
    assert!((3..=6).all(|id| runs.times(id) == 1), "not run again");
    let mut acked = broker.settlements(CHANNEL).acked();
    acked.sort_unstable();
    assert_eq!(acked, (1..=6).collect::<Vec<_>>());
    assert!(dead_letter_ids(&broker).is_empty());
    assert_nothing_acked_unhandled(&broker, &runs);
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_lost_delivery_is_not_acked_over_and_is_handled_after_its_redelivery() {
    const ACK_WAIT: Duration = Duration::from_secs(2);
    let broker = InMemory::new();
    let runs = Runs::new();
    let app = start(
        &broker,
        coalescing(&runs, 0, Duration::ZERO, ok)
            .max_in_flight(4)
            .ack_wait(ACK_WAIT),
    )
    .await;
    publish_orders(&broker, 1..=2).await;
    settle(&broker).await;

    // A connection blip: the delivery of 3 never reaches the app.
    broker.lose_next_deliveries(CHANNEL, 1);
    publish_orders(&broker, 3..=6).await;
    settle(&broker).await;

    assert_eq!(
        broker.faults(),
        vec![Fault::LostDelivery {
            channel: CHANNEL.into(),
            sequence: 3,
            consumer_sequence: 3
        }]
    );
    assert!((1..=6).all(|id| runs.times(id) == 1), "each handled once");
    let handled_3 = runs.of(3)[0].clone();
    assert_eq!(handled_3.delivery, 2, "3 was handled from its redelivery");
    let log = broker.settlements(CHANNEL);
    assert_eq!(log.expired(), vec![3], "only the lost delivery ran out");
    let early: Vec<u64> = log
        .iter()
        .filter(|s| s.outcome == Outcome::Acked && s.sequence >= 3 && s.at < handled_3.at)
        .map(|s| s.sequence)
        .collect();
    assert!(early.is_empty(), "acked across the gap: {early:?}");
    let mut acked = log.acked();
    acked.sort_unstable();
    assert_eq!(acked, (1..=6).collect::<Vec<_>>());
    assert!(dead_letter_ids(&broker).is_empty());
    assert_nothing_acked_unhandled(&broker, &runs);
    app.shutdown().await.expect("clean shutdown");
}

/// The repro of issue 9, defect 2: handled messages waiting behind a failing
/// head used to be redelivered each ack wait, run again, and dead-lettered.
/// The dead-lettered head is settled by the ack-all that passes it (a TERM
/// would act as an ack-all from its own, newer delivery, and void the acks
/// of the older deliveries behind it).
#[tokio::test(start_paused = true)]
async fn handled_messages_behind_a_failing_head_are_not_rerun_or_dead_lettered() {
    let broker = InMemory::new();
    publish_orders(&broker, 0..=4).await;
    let runs = Runs::new();
    let head_fails = |order: &Message<Order>| {
        if order.id == 0 {
            return Err(Failure::retry_after(Duration::from_secs(3), "id 0 fails"));
        }
        Ok(())
    };
    let subscriber = coalescing(&runs, 0, Duration::ZERO, head_fails)
        .ack_wait(Duration::from_secs(1))
        .max_deliver(3);
    let app = start(&broker, subscriber).await;

    settle(&broker).await;
    let times: Vec<usize> = (0..=4).map(|id| runs.times(id)).collect();
    assert_eq!(times, vec![3, 1, 1, 1, 1], "runs of ids 0..=4");
    assert_eq!(dead_letter_ids(&broker), vec![0], "only the failing id");
    let billing = broker.consumer_info(CHANNEL, "billing").expect("durable");
    assert_eq!(billing.acked, vec![1, 2, 3, 4, 5]);
    assert!(billing.terminated.is_empty(), "settled by the ack-all");
    assert!(
        billing.dead_lettered.is_empty(),
        "the broker gave up on none"
    );
    assert!(billing.pending.is_empty());
    assert_nothing_acked_unhandled(&broker, &runs);
    app.shutdown().await.expect("clean shutdown");
}

/// Issue 9, defect 3 (a rolling deploy): an app started while another
/// instance still holds unacked messages of the same durable must start
/// acking once their owner has acked them: they never come back to it.
#[tokio::test(start_paused = true)]
async fn an_app_started_while_another_holds_messages_acks_once_they_are_settled() {
    let broker = InMemory::new();
    let runs = Runs::new();
    // The default 30 s ack wait: the old instance's messages stay its own
    // while the new one waits.
    let subscriber = coalescing(&runs, 0, Duration::ZERO, ok).max_in_flight(2);
    publish_orders(&broker, 1..=2).await;
    // The old instance: takes 1 and 2, stops pulling, works on them.
    let mut old = broker
        .subscribe(subscriber.spec())
        .await
        .expect("subscribed");
    let one = within(old.next()).await.expect("1");
    let two = within(old.next()).await.expect("2");
    assert!(old.stop().is_empty());

    let new = start(&broker, subscriber).await;
    publish_orders(&broker, 3..=8).await;
    // The new instance handles what comes to it (two more than the old one
    // holds: max_ack_pending is 4), and must not ack them: an ack-all would
    // settle 1 and 2 too.
    let watched = runs.clone();
    within(broker.wait_until(move |_| watched.times(3) == 1 && watched.times(4) == 1)).await;
    let acking = broker.clone();
    let acked_early = tokio::time::timeout(
        Duration::from_secs(10),
        broker.wait_until(move |_| !acking.settlements(CHANNEL).acked().is_empty()),
    )
    .await;
    assert!(
        acked_early.is_err(),
        "acked while 1 and 2 were held elsewhere"
    );
    // The old instance acks its work (2 covers 1) and leaves.
    two.acker.ack().await.expect("acked");
    drop((one, two, old));

    settle(&broker).await;
    assert!(
        (3..=8).all(|id| runs.times(id) == 1),
        "each handled once: {:?}",
        runs.items()
            .iter()
            .map(|r| (r.id, r.delivery))
            .collect::<Vec<_>>()
    );
    assert!(runs
        .items()
        .iter()
        .all(|run| run.id >= 3 && run.delivery == 1));
    let log = broker.settlements(CHANNEL);
    assert!(log.expired().is_empty(), "nothing waited for an ack wait");
    let mut acked = log.acked();
    acked.sort_unstable();
    assert_eq!(acked, (1..=8).collect::<Vec<_>>());
    assert_eq!(
        log.acked_directly()[0],
        2,
        "the old instance's ack came first"
    );
    assert!(dead_letter_ids(&broker).is_empty());
    assert_nothing_acked_unhandled_from(&broker, &runs, 3);
    new.shutdown().await.expect("clean shutdown");
}

/// A coalescing app that shuts down while the client buffer holds
/// deliveries acks what it handled: the deliveries it hands back are listed
/// in the window (the broker still counts them unacked), and the fence is
/// checked once more at the end, so the final flush goes out.
#[tokio::test(start_paused = true)]
async fn a_coalescing_app_acks_what_it_handled_when_it_shuts_down_with_deliveries_buffered() {
    const WORK: Duration = Duration::from_secs(5);
    let broker = InMemory::new();
    publish_orders(&broker, 1..=6).await;
    let runs = Runs::new();
    // 1 and 2 run while 3 and 4 wait in the client's buffer (the consumer
    // lets twice max_in_flight be unacked).
    let subscriber = |app, work| coalescing(&runs, app, work, ok).max_in_flight(2);
    let first = start(&broker, subscriber(1, WORK)).await;
    let buffered = broker.clone();
    within(broker.wait_until(move |_| {
        buffered
            .consumer_info(CHANNEL, "billing")
            .is_some_and(|c| c.pending == vec![1, 2, 3, 4])
    }))
    .await;
    first.shutdown().await.expect("clean shutdown");
    let billing = broker.consumer_info(CHANNEL, "billing").expect("durable");
    assert_eq!(
        billing.acked,
        vec![1, 2],
        "handled before shutdown returned, not acked"
    );

    let second = start(&broker, subscriber(2, Duration::ZERO)).await;
    settle(&broker).await;
    assert!(
        (1..=6).all(|id| runs.times(id) == 1),
        "handled twice: {:?}",
        runs.items()
            .iter()
            .map(|r| (r.app, r.id, r.delivery))
            .collect::<Vec<_>>()
    );
    second.shutdown().await.expect("clean shutdown");
}

/// An ack-all that fails is sent again at the next flush, so the messages it
/// covers are not redelivered and handled again.
#[tokio::test(start_paused = true)]
async fn a_failed_coalesced_ack_does_not_rerun_handled_messages() {
    let broker = InMemory::new();
    publish_orders(&broker, 1..=4).await;
    broker.fail_next_ack(CHANNEL);
    let runs = Runs::new();
    let app = start(
        &broker,
        coalescing(&runs, 0, Duration::ZERO, ok)
            .max_in_flight(4)
            .ack_wait(Duration::from_secs(2)),
    )
    .await;

    settle(&broker).await;
    assert!(matches!(broker.faults()[..], [Fault::Ack { .. }]));
    let mut acked = broker.settlements(CHANNEL).acked();
    acked.sort_unstable();
    assert_eq!(acked, vec![1, 2, 3, 4]);
    assert!(
        (1..=4).all(|id| runs.times(id) == 1),
        "handled again after a lost ack: {:?}",
        runs.items()
            .iter()
            .map(|r| (r.id, r.delivery))
            .collect::<Vec<_>>()
    );
    assert_nothing_acked_unhandled(&broker, &runs);
    app.shutdown().await.expect("clean shutdown");
}

/// With ack policy "all" JetStream processes a term as an ack of everything
/// below it, so a dead-lettered message is not terminated: the ack-all that
/// passes it settles it, and a message before it that is still running is
/// not settled unhandled.
#[tokio::test(start_paused = true)]
async fn a_dead_letter_does_not_settle_the_messages_before_it() {
    let broker = InMemory::new();
    publish_orders(&broker, 1..=2).await;
    let runs = Runs::new();
    let handler = {
        let runs = runs.clone();
        move |order: Message<Order>| {
            let runs = runs.clone();
            async move {
                let result = match order.id {
                    // Slow, and fails on its first attempt.
                    1 => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        if order.attempt() == 1 {
                            Err(Failure::retryable("not yet"))
                        } else {
                            Ok(())
                        }
                    }
                    _ => Err(Failure::permanent("never valid")),
                };
                runs.record(0, &order, result.is_ok());
                result
            }
        }
    };
    let subscriber = Subscriber::new(CHANNEL, handler)
        .durable("billing")
        .start(StartPosition::All)
        .coalesced_acks()
        .retry(flowgate::middleware::retry::RetryPolicy::broker_only());
    let app = start(&broker, subscriber).await;

    settle(&broker).await;
    let watched = runs.clone();
    within(broker.wait_until(move |_| watched.times(1) >= 1)).await;
    settle(&broker).await;
    assert_eq!(dead_letter_ids(&broker), vec![2]);
    assert!(
        runs.of(1).iter().any(|run| run.ok),
        "order 1 was never handled: {:?}",
        runs.of(1)
    );
    assert_nothing_acked_unhandled(&broker, &runs);
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_durable_with_another_ack_policy_is_refused() {
    let broker = InMemory::new();
    let explicit = SubscriptionSpec::new(CHANNEL).with_durable("billing");
    drop(broker.subscribe(&explicit).await.expect("created"));
    let mut coalesced = explicit.clone();
    coalesced.ack = flowgate::AckMode::Coalesced;
    match broker.subscribe(&coalesced).await {
        Err(flowgate::Error::ConsumerMismatch {
            field,
            existing,
            wanted,
            ..
        }) => {
            assert_eq!(field, "ack policy");
            assert_eq!((existing.as_str(), wanted.as_str()), ("Explicit", "All"));
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
}
