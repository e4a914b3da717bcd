//! Failover on a 3-node JetStream cluster on loopback (an R3 stream): the
//! stream leader is killed, then (after it is back) the node the client is
//! connected to; consumption resumes on its own and nothing is lost.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowgate::{App, PublishError, PublishOptions, Publisher, Subscriber};
use flowgate_tests::{eventually, init_tracing, lock, JobError, NatsCluster};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
struct Job {
    id: u64,
}

const CHANNEL: &str = "failover.jobs";

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

    /// The longest pause between two handled messages after `since`.
    fn longest_pause_after(&self, since: Instant) -> Duration {
        let mut times: Vec<Instant> = lock(&self.0).iter().map(|(_, at)| *at).collect();
        times.sort_unstable();
        let mut last = since;
        let mut longest = Duration::ZERO;
        for at in times.into_iter().filter(|at| *at >= since) {
            longest = longest.max(at - last);
            last = at;
        }
        longest
    }
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

/// Kills node `index` and waits until 300 more messages were handled;
/// returns the longest pause in handling after the kill.
async fn kill_and_watch(
    cluster: &mut NatsCluster,
    index: usize,
    handled: &Handled,
    what: &str,
) -> Duration {
    let killed_at = Instant::now();
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
    handled.longest_pause_after(killed_at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumption_resumes_after_the_stream_leader_and_the_clients_node_die() {
    init_tracing();
    let mut cluster = NatsCluster::start(3).await;
    let nats = cluster.jetstream().await;
    let stream = nats.ensure_stream(CHANNEL).await.expect("an R3 stream");
    let leader = cluster.wait_for_stream_leader(&stream).await;

    let handled = Handled::default();
    let app = App::new()
        .subscriber(
            Subscriber::new(CHANNEL, {
                let handled = handled.clone();
                move |job: Job| {
                    let handled = handled.clone();
                    async move {
                        lock(&handled.0).push((job.id, Instant::now()));
                        Ok::<(), JobError>(())
                    }
                }
            })
            .durable("worker")
            .ack_wait(Duration::from_secs(2))
            .max_in_flight(64),
        )
        .start(nats.clone())
        .await
        .expect("app starts");
    let stop = CancellationToken::new();
    let publisher = tokio::spawn(publish_steadily(nats.clone(), stop.clone()));

    let flowing = eventually(Duration::from_secs(20), || async { handled.count() > 300 }).await;
    assert!(flowing, "messages flow before the fault");

    // The stream leader dies.
    let leader_pause = kill_and_watch(&mut cluster, leader, &handled, "the stream leader").await;
    cluster.restart(leader).await;
    cluster.wait_for_stream_leader(&stream).await;

    // The node the client is connected to dies.
    let name = nats.client().server_info().server_name;
    let node = cluster.index_of(&name).expect("the client's node");
    let node_pause = kill_and_watch(&mut cluster, node, &handled, "the client's node").await;

    stop.cancel();
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
    eprintln!(
        "{total} published, all handled ({} handlings); longest pause: {leader_pause:?} after the stream leader died, {node_pause:?} after the client's node died",
        handled.count()
    );
}
