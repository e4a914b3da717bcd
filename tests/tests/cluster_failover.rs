//! Failover on a 3-node JetStream cluster on loopback (an R3 stream): the
//! consumer's leader is killed (it holds the pull requests, which die with
//! it), then (after it is back) the node the client is connected to;
//! consumption resumes on its own, within 3 s of the cluster being able to
//! serve again, and nothing is lost.
//!
//! The handler is slower than the publisher while the faults happen, so
//! there is always a backlog: a pause in handling is the subscription's, not
//! a publisher's that has nothing stored yet.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowgate::{App, PublishError, PublishOptions, Publisher, Subscriber};
use flowgate_tests::{eventually, init_tracing, lock, JobError, NatsCluster};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
struct Job {
    id: u64,
}

const CHANNEL: &str = "failover.jobs";
const DURABLE: &str = "worker";
/// The longest a subscription may take to resume once the cluster serves again.
const RESUME_WITHIN: Duration = Duration::from_secs(3);

/// When each id was handled.
#[derive(Clone, Default)]
struct Handled(Arc<Mutex<Vec<(u64, Instant)>>>);

impl Handled {
    fn count(&self) -> usize {
        lock(&self.0).len()
    }

    fn ids(&self) -> BTreeSet<u64> {
        lock(&self.0).iter().map(|(id, _)| *id).collect()
    }

    /// The longest pause in handling after `since`: when it began and ended.
    fn longest_pause_after(&self, since: Instant) -> (Instant, Instant) {
        let mut times: Vec<Instant> = lock(&self.0).iter().map(|(_, at)| *at).collect();
        times.sort_unstable();
        let mut last = since;
        let mut longest = (since, since);
        for at in times.into_iter().filter(|at| *at >= since) {
            if at - last > longest.1 - longest.0 {
                longest = (last, at);
            }
            last = at;
        }
        longest
    }
}

/// When the stream or one of its consumers got a new leader, from the
/// server's advisories (`$JS.EVENT.ADVISORY.{STREAM,CONSUMER}.LEADER_ELECTED`),
/// as seen by a watcher on every node (the one killed drops out).
#[derive(Clone, Default)]
struct Elections(Arc<Mutex<Vec<Instant>>>);

impl Elections {
    async fn watch(cluster: &NatsCluster, stream: &str) -> Self {
        let elections = Self::default();
        let subject = "$JS.EVENT.ADVISORY.*.LEADER_ELECTED.>";
        for index in 0..cluster.size() {
            let client = async_nats::connect(cluster.node(index))
                .await
                .expect("a watcher connects");
            let mut advisories = client.subscribe(subject).await.expect("subscribes");
            // A request round trip: the server has the subscription after it.
            let _ = client.request("$JS.API.INFO", "".into()).await;
            let seen = elections.clone();
            let stream = stream.to_owned();
            tokio::spawn(async move {
                let _client = client;
                while let Some(advisory) = advisories.next().await {
                    if advisory.subject.split('.').nth(5) == Some(stream.as_str()) {
                        lock(&seen.0).push(Instant::now());
                    }
                }
            });
        }
        elections
    }

    /// The last election in `from..until`.
    fn last_between(&self, from: Instant, until: Instant) -> Option<Instant> {
        lock(&self.0)
            .iter()
            .copied()
            .filter(|at| (from..until).contains(at))
            .max()
    }
}

/// How a kill went: the pause it caused, and how long handling took to
/// resume once the cluster could serve again (the last leader election of
/// the stream or its consumer the kill caused; else the kill itself).
struct Outage {
    pause: Duration,
    waiting_for_election: Duration,
    resumed_after_ready: Duration,
}

/// Publishes ids at a steady pace until `stop`, then every id that was not
/// stored again, until all are; returns how many ids there are.
async fn publish_steadily(nats: flowgate::JetStream, stop: CancellationToken) -> u64 {
    let mut window = Publisher::new(nats).window(64);
    let mut unstored = BTreeSet::new();
    let note = |err: PublishError, unstored: &mut BTreeSet<u64>| match err {
        PublishError::NotStored { failures } => {
            for failure in failures {
                let job: Job = serde_json::from_slice(&failure.payload).expect("a job");
                unstored.insert(job.id);
            }
        }
        other => panic!("publishing failed without naming the events: {other}"),
    };
    let mut pace = tokio::time::interval(Duration::from_millis(2));
    let mut next = 0;
    while !stop.is_cancelled() {
        pace.tick().await;
        let options = PublishOptions::new()
            .channel(CHANNEL)
            .message_id(next.to_string());
        if let Err(err) = window.publish_with(&Job { id: next }, options).await {
            note(err, &mut unstored);
        }
        next += 1;
    }
    if let Err(err) = window.flush().await {
        note(err, &mut unstored);
    }
    while !unstored.is_empty() {
        for id in std::mem::take(&mut unstored) {
            let options = PublishOptions::new()
                .channel(CHANNEL)
                .message_id(id.to_string());
            if let Err(err) = window.publish_with(&Job { id }, options).await {
                note(err, &mut unstored);
            }
        }
        if let Err(err) = window.flush().await {
            note(err, &mut unstored);
        }
    }
    next
}

/// Kills node `index` and waits until 300 more messages were handled.
async fn kill_and_watch(
    cluster: &mut NatsCluster,
    index: usize,
    handled: &Handled,
    elections: &Elections,
    what: &str,
) -> Outage {
    let killed_at = Instant::now();
    tracing::warn!("killing {what}, node {index}");
    cluster.kill(index);
    let before = handled.count();
    let resumed = eventually(Duration::from_secs(30), || async {
        handled.count() > before + 300
    })
    .await;
    assert!(
        resumed,
        "consumption did not resume after {what} died\n{}",
        cluster.logs()
    );
    let (paused_at, resumed_at) = handled.longest_pause_after(killed_at);
    let ready_at = elections
        .last_between(killed_at, resumed_at)
        .unwrap_or(killed_at);
    Outage {
        pause: resumed_at - paused_at,
        waiting_for_election: ready_at - killed_at,
        resumed_after_ready: resumed_at - ready_at.max(paused_at),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumption_resumes_after_the_consumer_leader_and_the_clients_node_die() {
    init_tracing();
    let mut cluster = NatsCluster::start(3).await;
    let nats = cluster.jetstream().await;
    let stream = nats.ensure_stream(CHANNEL).await.expect("an R3 stream");
    cluster.wait_for_stream_leader(&stream).await;

    let elections = Elections::watch(&cluster, &stream).await;

    let handled = Handled::default();
    // Slower than the publisher until the faults are over: a backlog stays.
    let slow = Arc::new(AtomicBool::new(true));
    let app = App::new()
        .subscriber(
            Subscriber::new(CHANNEL, {
                let handled = handled.clone();
                let slow = slow.clone();
                move |job: Job| {
                    let handled = handled.clone();
                    let slow = slow.clone();
                    async move {
                        if slow.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(32)).await;
                        }
                        lock(&handled.0).push((job.id, Instant::now()));
                        Ok::<(), JobError>(())
                    }
                }
            })
            .durable(DURABLE)
            .ack_wait(Duration::from_secs(2))
            .max_in_flight(8),
        )
        .start(nats.clone())
        .await
        .expect("app starts");
    let stop = CancellationToken::new();
    let publisher = tokio::spawn(publish_steadily(nats.clone(), stop.clone()));

    let flowing = eventually(Duration::from_secs(20), || async { handled.count() > 300 }).await;
    assert!(flowing, "messages flow before the fault");

    // The consumer's leader dies, and its pull requests with it.
    let leader = cluster.wait_for_consumer_leader(&stream, DURABLE).await;
    let leader_loss = kill_and_watch(
        &mut cluster,
        leader,
        &handled,
        &elections,
        "the consumer's leader",
    )
    .await;
    cluster.restart(leader).await;
    cluster.wait_for_stream_leader(&stream).await;
    cluster.wait_for_consumer_leader(&stream, DURABLE).await;

    // The node the client is connected to dies.
    let name = nats.client().server_info().server_name;
    let node = cluster.index_of(&name).expect("the client's node");
    let node_loss = kill_and_watch(
        &mut cluster,
        node,
        &handled,
        &elections,
        "the client's node",
    )
    .await;

    stop.cancel();
    slow.store(false, Ordering::Relaxed);
    let total = publisher.await.expect("the publisher did not panic");
    let all = eventually(Duration::from_secs(30), || async {
        handled.ids().len() as u64 == total
    })
    .await;
    let missing: Vec<u64> = (0..total)
        .filter(|id| !handled.ids().contains(id))
        .collect();
    app.shutdown().await.expect("clean shutdown");
    assert!(
        all,
        "{} of {total} ids never handled: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    for (what, outage) in [
        ("the consumer's leader", &leader_loss),
        ("the client's node", &node_loss),
    ] {
        eprintln!(
            "{what} died: handling paused {:?}; {:?} until the last new leader, resumed {:?} after that",
            outage.pause, outage.waiting_for_election, outage.resumed_after_ready
        );
    }
    eprintln!(
        "{total} published, all handled ({} handlings)",
        handled.count()
    );
    for (what, outage) in [
        ("the consumer's leader", &leader_loss),
        ("the client's node", &node_loss),
    ] {
        assert!(
            outage.resumed_after_ready < RESUME_WITHIN,
            "after {what} died, handling resumed {:?} after the cluster could serve again (the pause was {:?})\n{}",
            outage.resumed_after_ready,
            outage.pause,
            cluster.logs()
        );
    }
}
