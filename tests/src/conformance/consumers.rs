//! Consumers: durable resume, queue groups and every start position.

use std::collections::BTreeMap;
use std::time::SystemTime;

use flowgate::StartPosition;

use super::apps::{publish, recording, start, stop};
use super::{Harness, Seen, QUIET};

/// A durable restarted on a new connection resumes after what it acked:
/// it sees what was published while it was down, and nothing before.
pub async fn durable_resume<H: Harness>(harness: &H) {
    let publisher = harness.connect().await;
    let seen = Seen::new();
    let durable = || recording(&seen, 0, |_| async { Ok(()) }).durable("resume");
    let first = start(harness.connect().await, durable().start(StartPosition::All)).await;
    publish(&publisher, 1..=3).await;
    seen.wait_calls(3).await;
    stop(first).await;

    publish(&publisher, 4..=6).await;
    let second = start(harness.connect().await, durable().start(StartPosition::All)).await;
    let calls = seen.wait_calls(6).await;
    // Handlers run concurrently: the order they ran in is not guaranteed.
    let mut ids: Vec<u64> = calls.iter().map(|c| c.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2, 3, 4, 5, 6]);
    assert!(calls.iter().all(|c| c.delivery == 1));
    stop(second).await;
}

/// Two apps on separate connections in one queue group share the jobs:
/// each job is handled once, by one of them.
pub async fn queue_group_without_duplicates<H: Harness>(harness: &H) {
    const N: u64 = 40;
    let publisher = harness.connect().await;
    let seen = Seen::new();
    let member = |n| {
        recording(&seen, n, |_| async {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await; // work
            Ok(())
        })
        .queue("workers")
        .max_in_flight(4)
    };
    let one = start(harness.connect().await, member(1)).await;
    let two = start(harness.connect().await, member(2)).await;
    publish(&publisher, 1..=N).await;
    seen.wait_calls(N as usize).await;

    let calls = seen.after_quiet(QUIET).await;
    let mut handled: BTreeMap<u64, usize> = BTreeMap::new();
    for call in &calls {
        *handled.entry(call.id).or_default() += 1;
    }
    assert_eq!(handled.len(), N as usize);
    let twice: Vec<_> = handled.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        twice.is_empty(),
        "handled more than once (id, times): {twice:?}"
    );
    stop(one).await;
    stop(two).await;
}

/// Publishes jobs 1..=5, starts a subscriber at `start`, publishes 6 and 7,
/// and returns the ids the subscriber saw.
async fn seen_from<H: Harness>(
    harness: &H,
    start_at: impl FnOnce() -> StartPosition,
    expect: usize,
) -> Vec<u64> {
    let nats = harness.connect().await;
    publish(&nats, 1..=3).await;
    let position = start_at();
    publish(&nats, 4..=5).await;
    let seen = Seen::new();
    let app = start(
        nats.clone(),
        recording(&seen, 0, |_| async { Ok(()) }).start(position),
    )
    .await;
    publish(&nats, 6..=7).await;
    seen.wait_calls(expect).await;
    let ids = seen.ids();
    stop(app).await;
    ids
}

/// `StartPosition::New`: only what is published after subscribing.
pub async fn start_new<H: Harness>(harness: &H) {
    assert_eq!(
        seen_from(harness, || StartPosition::New, 2).await,
        vec![6, 7]
    );
}

/// `StartPosition::All`: everything the channel holds.
pub async fn start_all<H: Harness>(harness: &H) {
    assert_eq!(
        seen_from(harness, || StartPosition::All, 7).await,
        (1..=7).collect::<Vec<_>>()
    );
}

/// `StartPosition::Last`: the newest message, then what follows.
pub async fn start_last<H: Harness>(harness: &H) {
    assert_eq!(
        seen_from(harness, || StartPosition::Last, 3).await,
        vec![5, 6, 7]
    );
}

/// `StartPosition::Sequence`: from that stream sequence on.
pub async fn start_sequence<H: Harness>(harness: &H) {
    assert_eq!(
        seen_from(harness, || StartPosition::Sequence(3), 5).await,
        vec![3, 4, 5, 6, 7]
    );
}

/// `StartPosition::Time`: from the first message stored at or after it.
pub async fn start_time<H: Harness>(harness: &H) {
    // Taken after job 3 was acked and before job 4 was sent.
    let ids = seen_from(harness, || StartPosition::Time(SystemTime::now()), 4).await;
    assert_eq!(ids, vec![4, 5, 6, 7]);
}
