//! The failure budget and dead letters on NATS Streaming, against the
//! protocol double over a real nats-server: a redelivery of a message whose
//! handler still runs is held back and not counted, and a message past
//! `max_deliver` goes to the dead letters instead of being acked and dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowgate::transport::stan::StanDeadLetter;
use flowgate::{App, Publisher, Subscriber};
use flowgate_tests::{eventually, JobError, DEADLINE};
use prost::Message as _;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "stan.budget")]
struct Job {
    id: u64,
}

const CHANNEL: &str = "stan.budget";
const DEAD_LETTERS: &str = "dlq.stan.budget";

/// Handler runs: started, running now, and the most running at once.
#[derive(Debug, Default)]
struct Runs {
    started: AtomicU64,
    running: AtomicU64,
    most: AtomicU64,
}

impl Runs {
    fn start(&self) {
        self.started.fetch_add(1, Ordering::SeqCst);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
    }

    fn end(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
    }

    fn started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_slower_than_the_ack_wait_runs_once_and_its_redeliveries_do_not_count() {
    let (_server, double, stan) = flowgate_tests::stan_double::start_with_client("slow").await;
    let double = Arc::new(double);
    let runs = Arc::new(Runs::default());
    let handler = {
        let (runs, double) = (runs.clone(), double.clone());
        move |_job: Job| {
            let (runs, double) = (runs.clone(), double.clone());
            async move {
                runs.start();
                // Runs past two ack waits: the server redelivers twice meanwhile.
                let _ = eventually(DEADLINE, || async { double.redeliveries(CHANNEL) >= 2 }).await;
                runs.end();
                Ok::<(), JobError>(())
            }
        }
    };
    let app = App::new()
        .subscriber(
            Subscriber::new(CHANNEL, handler)
                .durable("slow")
                .max_in_flight(4)
                .ack_wait(Duration::from_secs(1))
                .max_deliver(2),
        )
        .start(stan.clone())
        .await
        .expect("app starts");
    Publisher::new(stan.clone())
        .publish(&Job { id: 1 })
        .await
        .expect("published");
    let settled = eventually(DEADLINE, || async {
        double.redeliveries(CHANNEL) >= 2 && double.unacked(CHANNEL) == 0
    })
    .await;
    assert!(
        settled,
        "not acked: {} unacked after {} redeliveries",
        double.unacked(CHANNEL),
        double.redeliveries(CHANNEL)
    );
    app.shutdown().await.expect("drains");
    assert_eq!(
        runs.most.load(Ordering::SeqCst),
        1,
        "the message ran in several handlers at once"
    );
    assert_eq!(runs.started(), 1, "a redelivery of a running message ran");
    assert_eq!(
        double.stored(DEAD_LETTERS),
        0,
        "held-back redeliveries counted towards max_deliver"
    );
    stan.close().await.expect("closes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_past_max_deliver_is_dead_lettered_not_dropped() {
    let (_server, double, stan) = flowgate_tests::stan_double::start_with_client("crashing").await;
    let subscriber = |runs: Arc<Runs>, hang: bool| {
        Subscriber::new(CHANNEL, move |_job: Job| {
            let runs = runs.clone();
            async move {
                runs.start();
                if hang {
                    std::future::pending::<()>().await;
                }
                Ok::<(), JobError>(())
            }
        })
        .durable("crashing")
        .ack_wait(Duration::from_secs(1))
        .max_deliver(1)
    };
    // The first app's handler hangs; the app goes away without a shutdown.
    let hung = Arc::new(Runs::default());
    let app = App::new()
        .subscriber(subscriber(hung.clone(), true))
        .start(stan.clone())
        .await
        .expect("app starts");
    Publisher::new(stan.clone())
        .publish(&Job { id: 1 })
        .await
        .expect("published");
    assert!(eventually(DEADLINE, || async { hung.started() == 1 }).await);
    drop(app);
    let offline = eventually(DEADLINE, || async {
        double.active_subscriptions(CHANNEL) == 0
    })
    .await;
    assert!(offline, "the first app's subscription did not end");

    // The next app gets the message a second time, past max_deliver 1: it
    // is dead-lettered (stored, then the original acked), never run again.
    let again = Arc::new(Runs::default());
    let app = App::new()
        .subscriber(subscriber(again.clone(), false))
        .start(stan.clone())
        .await
        .expect("app starts again");
    let dead_lettered = eventually(DEADLINE, || async {
        double.stored(DEAD_LETTERS) == 1 && double.unacked(CHANNEL) == 0
    })
    .await;
    assert!(
        dead_lettered,
        "dead letters stored: {}, unacked: {}",
        double.stored(DEAD_LETTERS),
        double.unacked(CHANNEL)
    );
    assert_eq!(again.started(), 0, "the handler ran past the budget");
    app.shutdown().await.expect("drains");

    // NATS Streaming has no headers: the dead letter is an envelope with
    // what JetStream sends as headers, and the original payload inside.
    let stored = double.payloads(DEAD_LETTERS);
    let letter = StanDeadLetter::decode(stored[0].as_slice()).expect("an envelope");
    assert_eq!(letter.original_subject, CHANNEL);
    assert_eq!(letter.original_sequence, 1);
    assert_eq!(letter.attempts, 1, "the budget");
    assert_eq!(letter.durable, "crashing");
    assert!(!letter.last_error.is_empty());
    assert!(
        letter.failed_at.contains('T'),
        "RFC 3339: {}",
        letter.failed_at
    );
    assert!(
        letter.message_id.contains("crashing") && letter.message_id.ends_with('1'),
        "the same id for every copy: {}",
        letter.message_id
    );
    let job: Job = serde_json::from_slice(&letter.payload).expect("the original payload");
    assert_eq!(job.id, 1);
}
