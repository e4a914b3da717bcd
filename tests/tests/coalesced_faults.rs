//! Coalesced acks (`ack = "coalesced"`, JetStream's ack-all policy) off the
//! happy path, on a real nats-server: deliveries lost in a connection blip
//! are handled before an ack covers them; handled messages waiting behind a
//! failing one run once and stay out of the dead letters; an instance
//! started beside one that still holds messages (a rolling deploy) acks
//! everything once the old one leaves; a work-queue stream is refused.
//!
//! Every test watches the consumer's ack floor while it runs: an ack-all
//! must never cover a message no handler has settled (succeeded, or failed
//! into the dead letters).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::stream::{Config, RetentionPolicy, StorageType};
use flowgate::dead_letter::ATTEMPTS;
use flowgate::{
    App, Event, Failure, Message, PublishOptions, Publisher, StartPosition, Subscriber,
};
use flowgate_tests::fault::Direction;
use flowgate_tests::{
    consumer_state, eventually, init_tracing, lock, stored_messages, FaultProxy, JobError,
    NatsServer, DEADLINE,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
struct Job {
    id: u64,
}

/// How long a test waits for something that should happen at once.
const SOON: Duration = Duration::from_secs(10);

async fn publish(nats: &flowgate::JetStream, channel: &str, ids: std::ops::Range<u64>) {
    let mut window = Publisher::new(nats.clone()).window(128);
    for id in ids {
        window
            .publish_with(&Job { id }, PublishOptions::new().channel(channel))
            .await
            .expect("publish");
    }
    window.flush().await.expect("stored");
}

/// What the handlers did, shared by every instance of a test.
#[derive(Debug, Default)]
struct Runs {
    /// Handler runs that finished (any outcome), by job id.
    by_id: Mutex<BTreeMap<u64, u32>>,
    /// Successful runs, by job id.
    ok_by_id: Mutex<BTreeMap<u64, u32>>,
    /// Stream sequences whose message a run settled for good: it succeeded,
    /// or its failure sends it to the dead letters.
    last: Mutex<BTreeSet<u64>>,
}

impl Runs {
    /// Records a run that succeeded; call it just before the handler returns.
    fn succeeded(&self, job: &Message<Job>) {
        *lock(&self.ok_by_id).entry(job.id).or_default() += 1;
        self.failed(job, true);
    }

    /// Records a run that failed; `last` when the failure dead-letters it.
    fn failed(&self, job: &Message<Job>, last: bool) {
        *lock(&self.by_id).entry(job.id).or_default() += 1;
        if last {
            lock(&self.last).insert(job.stream_sequence());
        }
    }

    fn by_id(&self) -> BTreeMap<u64, u32> {
        lock(&self.by_id).clone()
    }

    fn ok_by_id(&self) -> BTreeMap<u64, u32> {
        lock(&self.ok_by_id).clone()
    }

    fn ids(&self) -> BTreeSet<u64> {
        lock(&self.ok_by_id).keys().copied().collect()
    }

    fn settled_seqs(&self) -> BTreeSet<u64> {
        lock(&self.last).clone()
    }
}

/// Polls the consumer's ack floor while a test runs and records each time
/// it covered a stream sequence no handler had settled for good (succeeded,
/// or failed into the dead letters): a message settled without being handled.
struct FloorWatch {
    task: tokio::task::JoinHandle<()>,
    violations: Arc<Mutex<Vec<String>>>,
}

impl FloorWatch {
    fn start(nats: &flowgate::JetStream, channel: &str, durable: &str, runs: Arc<Runs>) -> Self {
        let violations = Arc::new(Mutex::new(Vec::new()));
        let (nats, channel, durable) = (nats.clone(), channel.to_owned(), durable.to_owned());
        let seen = violations.clone();
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(20));
            loop {
                every.tick().await;
                // The floor first, then the runs: a handler returns before
                // its message's ack is sent.
                let Some(state) = consumer_state(&nats, &channel, &durable).await else {
                    continue;
                };
                let settled = runs.settled_seqs();
                let unhandled: Vec<u64> = (1..=state.ack_floor)
                    .filter(|seq| !settled.contains(seq))
                    .collect();
                if !unhandled.is_empty() {
                    lock(&seen).push(format!(
                        "ack floor {} covers stream sequences {unhandled:?}, never handled",
                        state.ack_floor
                    ));
                }
            }
        });
        FloorWatch { task, violations }
    }

    /// Stops watching; the violations seen.
    fn stop(self) -> Vec<String> {
        self.task.abort();
        lock(&self.violations).clone()
    }
}

/// Waits until the consumer has acked everything up to `floor` and holds
/// nothing unacked; panics with its state otherwise.
async fn settle_through(nats: &flowgate::JetStream, channel: &str, durable: &str, floor: u64) {
    let settled = eventually(DEADLINE, || async {
        consumer_state(nats, channel, durable)
            .await
            .is_some_and(|s| s.ack_floor == floor && s.num_ack_pending == 0)
    })
    .await;
    let state = consumer_state(nats, channel, durable).await;
    assert!(
        settled,
        "expected ack floor {floor} and nothing pending: {state:?}"
    );
}

/// Defect 1: deliveries the server made that never reached the app (held
/// in a frozen connection, then dropped with it) must not be settled by the
/// next ack-all; they are handled when they come again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_lost_in_a_connection_blip_are_handled_before_an_ack_covers_them() {
    const N: u64 = 60;
    const BEFORE_BLIP: u64 = 8;
    init_tracing();
    let server = NatsServer::start().await;
    let direct = server.jetstream().await;
    let proxy = FaultProxy::start(&server).await;
    let through_proxy = proxy.jetstream().await;
    let channel = "coalesce.blip";
    direct.ensure_stream(channel).await.expect("stream");

    let runs = Arc::new(Runs::default());
    let recorded = runs.clone();
    let app = App::new()
        .subscriber(
            Subscriber::new(channel, move |job: Message<Job>| {
                let runs = recorded.clone();
                async move {
                    runs.succeeded(&job);
                    Ok::<_, JobError>(())
                }
            })
            .durable("blip")
            .max_in_flight(4)
            .ack_wait(Duration::from_secs(1))
            .max_deliver(10)
            .coalesced_acks(),
        )
        .start(through_proxy.clone())
        .await
        .expect("app starts");
    let watch = FloorWatch::start(&direct, channel, "blip", runs.clone());

    publish(&direct, channel, 0..BEFORE_BLIP).await;
    settle_through(&direct, channel, "blip", BEFORE_BLIP).await;

    // Nothing reaches the app from here on: what the server delivers stays
    // in the proxy, counted by the server as delivered and unacked.
    proxy.freeze(Direction::ServerToClient);
    publish(&direct, channel, BEFORE_BLIP..N).await;
    let in_transit = eventually(SOON, || async {
        consumer_state(&direct, channel, "blip")
            .await
            .is_some_and(|s| s.num_ack_pending > 0)
    })
    .await;
    let state = consumer_state(&direct, channel, "blip").await;
    assert!(
        in_transit,
        "the server delivered into the frozen connection: {state:?}"
    );
    let lost = state.map_or(0, |s| s.num_ack_pending);
    // The connection is reset with those deliveries in it; the client
    // reconnects through the proxy (frozen until its new connection is in).
    proxy.cut();
    let reconnected = eventually(SOON, || async { proxy.accepted() >= 2 }).await;
    assert!(
        reconnected,
        "the client did not reconnect through the proxy"
    );
    proxy.thaw(Direction::ServerToClient);

    settle_through(&direct, channel, "blip", N).await;
    app.shutdown().await.expect("clean shutdown");
    let violations = watch.stop();
    assert!(
        violations.is_empty(),
        "{lost} deliveries were lost in transit; messages were settled without being handled: {violations:?}"
    );
    assert_eq!(
        runs.ids(),
        (0..N).collect::<BTreeSet<_>>(),
        "every message handled at least once"
    );
}

/// Defect 2: while the head of the window fails and backs off, the handled
/// messages behind it are kept alive with progress acks and a redelivery of
/// one is not handled again, so they run once and are never dead-lettered;
/// the failing one spends its budget and is dead-lettered alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handled_messages_behind_a_failing_head_run_once_and_stay_out_of_the_dead_letters() {
    const N: u64 = 5;
    const MAX_DELIVER: u32 = 3;
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let channel = "coalesce.head";
    let dead_letters = "dlq.coalesce.head";
    nats.ensure_stream(channel).await.expect("stream");
    nats.ensure_stream(dead_letters)
        .await
        .expect("dead-letter stream");

    let runs = Arc::new(Runs::default());
    let recorded = runs.clone();
    let app = App::new()
        .subscriber(
            Subscriber::new(channel, move |job: Message<Job>| {
                let runs = recorded.clone();
                async move {
                    if job.id == 0 {
                        runs.failed(&job, job.attempt() >= MAX_DELIVER);
                        // Longer than the ack wait: the window must not wait that long.
                        return Err(Failure::retry_after(
                            Duration::from_secs(3),
                            JobError("head keeps failing".into()),
                        ));
                    }
                    runs.succeeded(&job);
                    Ok(())
                }
            })
            .durable("head")
            .max_in_flight(8)
            .ack_wait(Duration::from_secs(1))
            .max_deliver(MAX_DELIVER)
            .coalesced_acks(),
        )
        .start(nats.clone())
        .await
        .expect("app starts");
    let watch = FloorWatch::start(&nats, channel, "head", runs.clone());
    publish(&nats, channel, 0..N).await;

    // Every message is settled: 0 by its dead letter, 1-4 by the ack-all.
    // After that the server delivers nothing more, so the runs are final.
    settle_through(&nats, channel, "head", N).await;
    app.shutdown().await.expect("clean shutdown");
    let violations = watch.stop();
    assert!(violations.is_empty(), "{violations:?}");
    let expected: BTreeMap<u64, u32> = [(0, MAX_DELIVER), (1, 1), (2, 1), (3, 1), (4, 1)].into();
    assert_eq!(
        runs.by_id(),
        expected,
        "runs by id: the failing one once per delivery, the others once"
    );
    assert_eq!(runs.ok_by_id().get(&0), None);
    let letters = stored_messages(&nats, dead_letters).await;
    let dead: Vec<u64> = letters
        .iter()
        .map(|letter| {
            Job::decode(&letter.payload)
                .expect("a dead letter holds a job")
                .id
        })
        .collect();
    assert_eq!(dead, vec![0], "only the failing message is dead-lettered");
    assert_eq!(
        letters[0].headers.get(ATTEMPTS).map(|v| v.as_str()),
        Some(MAX_DELIVER.to_string().as_str())
    );
}

/// Defect 3: a rolling deploy. Instance A holds unacked messages (slow
/// handlers, and deliveries its transport buffered) when instance B starts
/// on the same durable. A is told to shut down: it stops pulling and hands
/// its buffered deliveries back, which B takes while A's handlers still run;
/// then A's handlers finish and A leaves. B must ack everything after that,
/// and nothing may reach the dead letters. (Coalesced acks refuse a queue
/// group, so both instances bind the same durable without one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rolling_deploy_the_new_instance_acks_everything() {
    const N: u64 = 24;
    const MAX_IN_FLIGHT: usize = 4;
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let channel = "coalesce.deploy";
    let dead_letters = "dlq.coalesce.deploy";
    nats.ensure_stream(channel).await.expect("stream");
    nats.ensure_stream(dead_letters)
        .await
        .expect("dead-letter stream");

    let runs = Arc::new(Runs::default());
    // A's handlers wait for this gate.
    let (gate, gate_rx) = watch::channel(false);
    let waiting = Arc::new(AtomicUsize::new(0));
    let handled_by_b = Arc::new(AtomicUsize::new(0));
    let instance = |held: bool, counted: Arc<AtomicUsize>| {
        let (runs, gate, waiting) = (runs.clone(), gate_rx.clone(), waiting.clone());
        Subscriber::new(channel, move |job: Message<Job>| {
            let (runs, mut gate, waiting, counted) =
                (runs.clone(), gate.clone(), waiting.clone(), counted.clone());
            async move {
                if held {
                    waiting.fetch_add(1, Ordering::SeqCst);
                    let _ = gate.wait_for(|open| *open).await;
                }
                counted.fetch_add(1, Ordering::SeqCst);
                runs.succeeded(&job);
                Ok::<_, JobError>(())
            }
        })
        .durable("deploy")
        .max_in_flight(MAX_IN_FLIGHT)
        .ack_wait(Duration::from_secs(1))
        .max_deliver(3)
        .coalesced_acks()
    };

    let a = App::new()
        .subscriber(instance(true, Arc::new(AtomicUsize::new(0))))
        .start(nats.clone())
        .await
        .expect("instance A starts");
    let watch = FloorWatch::start(&nats, channel, "deploy", runs.clone());
    publish(&nats, channel, 0..N).await;
    let holding = eventually(SOON, || async {
        waiting.load(Ordering::SeqCst) == MAX_IN_FLIGHT
    })
    .await;
    assert!(holding, "A runs {MAX_IN_FLIGHT} slow handlers");

    let b = App::new()
        .subscriber(instance(false, handled_by_b.clone()))
        .start(nats.clone())
        .await
        .expect("instance B starts");
    let a_leaves = tokio::spawn(a.shutdown());
    let b_took_some = eventually(SOON, || async { handled_by_b.load(Ordering::SeqCst) > 0 }).await;
    assert!(
        b_took_some,
        "B handled what A handed back while A's handlers still ran"
    );
    assert_eq!(
        waiting.load(Ordering::SeqCst),
        MAX_IN_FLIGHT,
        "A's handlers are still running"
    );

    gate.send_replace(true);
    a_leaves
        .await
        .expect("A's shutdown task")
        .expect("A shuts down cleanly");

    settle_through(&nats, channel, "deploy", N).await;
    b.shutdown().await.expect("B shuts down cleanly");
    let violations = watch.stop();
    assert!(violations.is_empty(), "{violations:?}");
    assert_eq!(
        runs.ids(),
        (0..N).collect::<BTreeSet<_>>(),
        "every message handled at least once"
    );
    let dead = stored_messages(&nats, dead_letters).await;
    assert!(
        dead.is_empty(),
        "{} message(s) dead-lettered although every handler succeeded",
        dead.len()
    );
}

/// Under the ack-all policy the server treats a TERM as an ack of every
/// message before it. A message dead-lettered while an earlier one waits for
/// its redelivery must not settle that one: it comes again and is handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_message_settles_nothing_before_it() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let channel = "coalesce.term";
    let dead_letters = "dlq.coalesce.term";
    nats.ensure_stream(channel).await.expect("stream");
    nats.ensure_stream(dead_letters)
        .await
        .expect("dead-letter stream");

    let runs = Arc::new(Runs::default());
    let recorded = runs.clone();
    let app = App::new()
        .subscriber(
            Subscriber::new(channel, move |job: Message<Job>| {
                let runs = recorded.clone();
                async move {
                    match (job.id, job.attempt()) {
                        // Back to the broker (longer than the in-process
                        // retry limit), then fine.
                        (0, 1) => {
                            runs.failed(&job, false);
                            Err(Failure::retry_after(
                                Duration::from_millis(1500),
                                JobError("not yet".into()),
                            ))
                        }
                        (1, _) => {
                            runs.failed(&job, true);
                            Err(Failure::permanent(JobError("never".into())))
                        }
                        _ => {
                            runs.succeeded(&job);
                            Ok(())
                        }
                    }
                }
            })
            .durable("term")
            .max_in_flight(4)
            .ack_wait(Duration::from_secs(2))
            .max_deliver(5)
            .coalesced_acks(),
        )
        .start(nats.clone())
        .await
        .expect("app starts");
    let watch = FloorWatch::start(&nats, channel, "term", runs.clone());
    publish(&nats, channel, 0..3).await;

    settle_through(&nats, channel, "term", 3).await;
    app.shutdown().await.expect("clean shutdown");
    let violations = watch.stop();
    assert!(violations.is_empty(), "{violations:?}");
    assert_eq!(
        runs.ok_by_id(),
        [(0, 1), (2, 1)].into(),
        "the one that waited for its redelivery was handled, once"
    );
    let letters = stored_messages(&nats, dead_letters).await;
    let dead: Vec<u64> = letters
        .iter()
        .map(|letter| {
            Job::decode(&letter.payload)
                .expect("a dead letter holds a job")
                .id
        })
        .collect();
    assert_eq!(dead, vec![1], "only the permanent failure is dead-lettered");
}

/// Under the ack-all policy the server ignores an ack whose delivery number
/// is not above the consumer's acked delivery floor. When a redelivered
/// message (a high delivery number) is handled while messages delivered
/// before it are still running behind it, an ack at it would make their
/// acks void: they would be redelivered and run again. Each handled message
/// here runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_head_does_not_void_the_acks_of_messages_behind_it() {
    const N: u64 = 6;
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let channel = "coalesce.order";
    nats.ensure_stream(channel).await.expect("stream");

    let runs = Arc::new(Runs::default());
    let (recorded, watched) = (runs.clone(), nats.clone());
    let app = App::new()
        .subscriber(
            Subscriber::new(channel, move |job: Message<Job>| {
                let (runs, nats) = (recorded.clone(), watched.clone());
                async move {
                    match (job.id, job.attempt()) {
                        (0, 1) => {
                            runs.failed(&job, false);
                            return Err(Failure::retry_after(
                                Duration::from_millis(1500),
                                JobError("not yet".into()),
                            ));
                        }
                        (1, 1) => {
                            // Still running when the redelivered head is
                            // handled, and until an ack at the head alone
                            // reaches the broker (at most a second: a correct
                            // window sends none).
                            let _ = eventually(SOON, || async { runs.ok_by_id().contains_key(&0) })
                                .await;
                            let _ = eventually(Duration::from_secs(1), || async {
                                consumer_state(&nats, "coalesce.order", "order")
                                    .await
                                    .is_some_and(|s| s.ack_floor >= 1)
                            })
                            .await;
                        }
                        _ => {}
                    }
                    runs.succeeded(&job);
                    Ok(())
                }
            })
            .durable("order")
            .max_in_flight(4)
            .ack_wait(Duration::from_secs(2))
            .max_deliver(5)
            .coalesced_acks(),
        )
        .start(nats.clone())
        .await
        .expect("app starts");
    let watch = FloorWatch::start(&nats, channel, "order", runs.clone());
    publish(&nats, channel, 0..N).await;

    settle_through(&nats, channel, "order", N).await;
    app.shutdown().await.expect("clean shutdown");
    let violations = watch.stop();
    assert!(violations.is_empty(), "{violations:?}");
    let once: BTreeMap<u64, u32> = (0..N).map(|id| (id, 1)).collect();
    assert_eq!(runs.ok_by_id(), once, "every message handled once");
}

/// Defect 4: a work-queue stream requires explicit acks, so a coalesced
/// subscriber on one is refused at start with an error naming the fix, and
/// nothing is created on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_work_queue_stream_refuses_coalesced_acks_at_start() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let channel = "coalesce.work";
    nats.context()
        .create_stream(Config {
            name: "work_queue".into(),
            subjects: vec![channel.into()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::Memory,
            ..Config::default()
        })
        .await
        .expect("work-queue stream");
    // A work-queue stream also requires consumers that start at its first message.
    let subscriber = || {
        Subscriber::new(channel, |_job: Job| async { Ok::<_, JobError>(()) })
            .durable("worker")
            .start(StartPosition::All)
            .max_deliver(3)
    };

    let refused = App::new()
        .subscriber(subscriber().coalesced_acks())
        .start(nats.clone())
        .await
        .expect_err("coalesced acks on a work-queue stream are refused");
    let text = refused.to_string();
    assert!(
        text.contains("work-queue") && text.contains("ack = \"auto\""),
        "the error says why and what to use instead: {text}"
    );
    assert_eq!(
        consumer_state(&nats, channel, "worker").await,
        None,
        "no consumer was created"
    );

    // What the error says to use works.
    let app = App::new()
        .subscriber(subscriber())
        .start(nats.clone())
        .await
        .expect("ack = \"auto\" on a work-queue stream starts");
    app.shutdown().await.expect("clean shutdown");
}
