//! NATS Streaming publishing against the protocol double over a real
//! nats-server: the pub-ack wait. A publish whose ack does not come within
//! the wait after it was sent fails with `PubAckTimeout`, each at its own
//! deadline; an ack within the wait succeeds; a late ack is ignored; a
//! failed publish gives its slot back.

use std::time::{Duration, Instant};

use flowgate::transport::stan::StanError;
use flowgate::{NatsStreaming, OutgoingMessage, PublishError, StanOptions, Transport};
use flowgate_tests::stan_double::StanDouble;
use flowgate_tests::{init_tracing, NatsServer};

const WAIT: Duration = Duration::from_millis(500);
/// How late past its deadline a publish may fail on a loaded machine.
const SLACK: Duration = Duration::from_millis(1500);

async fn setup(client_id: &str, slots: usize) -> (NatsServer, StanDouble, NatsStreaming) {
    init_tracing();
    let server = NatsServer::start().await;
    let double = StanDouble::start(&server.url()).await;
    let stan = NatsStreaming::connect(
        &server.url(),
        StanOptions::new(client_id)
            .pub_ack_wait(WAIT)
            .max_pub_acks_in_flight(slots),
    )
    .await
    .expect("registers with the double");
    (server, double, stan)
}

/// The NATS Streaming error a failed publish carries.
fn stan_error(err: &PublishError) -> Option<&StanError> {
    match err {
        PublishError::Broker { source, .. } => source.downcast_ref::<StanError>(),
        _ => None,
    }
}

fn assert_timed_out(outcome: Result<flowgate::PublishAck, PublishError>, waited: Duration) {
    let err = outcome.expect_err("no ack came: the publish fails");
    assert_eq!(
        stan_error(&err),
        Some(&StanError::PubAckTimeout(WAIT)),
        "{err}"
    );
    assert!(
        waited >= WAIT,
        "failed after {waited:?}, before the ack wait"
    );
    assert!(waited < WAIT + SLACK, "failed only after {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_publish_without_an_ack_fails_at_its_own_deadline() {
    let (_server, double, stan) = setup("pub-ack-wait", 16).await;
    double.delay_pub_acks(Some(Duration::from_secs(3600)));
    // Three publishes, sent 200 ms apart, all waiting at once.
    let mut sent = Vec::new();
    for id in 0..3 {
        let pending = stan
            .publish(OutgoingMessage::new("stan.acks", format!("{id}")))
            .await
            .expect("sent");
        sent.push((Instant::now(), pending));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (at, pending) in sent {
        let outcome = pending.await;
        assert_timed_out(outcome, at.elapsed());
    }
    assert_eq!(double.stored("stan.acks"), 3, "stored, only not acked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_in_time_succeeds_and_a_late_one_is_ignored() {
    // One slot: a publish that timed out must give it back.
    let (_server, double, stan) = setup("pub-ack-late", 1).await;
    double.delay_pub_acks(Some(WAIT / 3));
    let pending = stan
        .publish(OutgoingMessage::new("stan.late", "in time"))
        .await
        .expect("sent");
    pending.await.expect("acked within the wait");

    double.delay_pub_acks(Some(WAIT * 2));
    let at = Instant::now();
    let pending = stan
        .publish(OutgoingMessage::new("stan.late", "late"))
        .await
        .expect("sent");
    assert_timed_out(pending.await, at.elapsed());

    // The late ack arrives meanwhile and matches nothing; the slot is free.
    double.delay_pub_acks(None);
    tokio::time::sleep(WAIT * 2).await;
    let pending = tokio::time::timeout(
        WAIT,
        stan.publish(OutgoingMessage::new("stan.late", "after")),
    )
    .await
    .expect("the slot was given back")
    .expect("sent");
    pending.await.expect("acked at once");
    assert_eq!(double.stored("stan.late"), 3);
}
