//! NATS Streaming through the protocol double over a real `nats-server`:
//! one server and one double per scenario, a client of its own (with a
//! client id of its own) per connection.

use std::sync::atomic::{AtomicU64, Ordering};

use flowgate::{NatsStreaming, StanOptions};

use super::Harness;
use crate::stan_double::StanDouble;
use crate::NatsServer;

/// NATS Streaming: the protocol double on a `nats-server` of the test's own.
#[derive(Debug)]
pub struct StanHarness {
    // Dropped first: the double stops answering before the server goes.
    double: StanDouble,
    server: NatsServer,
    clients: AtomicU64,
}

impl StanHarness {
    /// Starts a server and a double on it.
    pub async fn start() -> Self {
        let server = NatsServer::start().await;
        let double = StanDouble::start(&server.url()).await;
        Self {
            double,
            server,
            clients: AtomicU64::new(0),
        }
    }

    /// The double, to look at its store.
    pub fn double(&self) -> &StanDouble {
        &self.double
    }
}

impl Harness for StanHarness {
    type T = NatsStreaming;

    /// A new client, registered under a client id no other connection of
    /// the scenario uses (the server refuses a live id).
    async fn connect(&self) -> NatsStreaming {
        let n = self.clients.fetch_add(1, Ordering::SeqCst) + 1;
        let client_id = format!("conformance-{n}");
        NatsStreaming::connect(&self.server.url(), StanOptions::new(client_id.as_str()))
            .await
            .unwrap_or_else(|e| panic!("{client_id} cannot register with the double: {e}"))
    }
}

impl StanHarness {
    /// A new connection registered as `client_id`. NATS Streaming refuses an
    /// id whose holder is alive, so the holder must have closed.
    pub async fn connect_as(&self, client_id: &str) -> NatsStreaming {
        NatsStreaming::connect(&self.server.url(), StanOptions::new(client_id))
            .await
            .unwrap_or_else(|e| panic!("{client_id} cannot register with the double: {e}"))
    }
}

/// What NATS Streaming does where a scenario of the suite cannot hold, by
/// design of the protocol. Each function is the STAN counterpart of the
/// scenario of the same topic and asserts the documented behaviour.
pub mod exceptions {
    use std::time::{Duration, SystemTime};

    use flowgate::transport::stan::proto;
    use flowgate::{Failure, Headers, PublishOptions, StartPosition};

    use super::super::apps::{publish, publish_with, recording, start, stop};
    use super::super::{Harness, Seen, ACK_WAIT, CHANNEL, QUIET, SLACK};
    use super::StanHarness;

    /// Instead of `nak_delay_respected`: there is no nak. A nak'd message
    /// comes back once the ack wait has passed, whatever delay was asked:
    /// not sooner for no delay, not later for a delay past the ack wait.
    pub async fn nak_comes_back_after_the_ack_wait(harness: &StanHarness) {
        const LONG: Duration = Duration::from_secs(10);
        let nats = harness.connect().await;
        let seen = Seen::new();
        let subscriber = recording(&seen, 0, |job| async move {
            match (job.delivery_count(), job.id) {
                (1, 1) => job.nak(Some(LONG)).await.map_err(Failure::from),
                (1, _) => job.nak(None).await.map_err(Failure::from),
                _ => job.ack().await.map_err(Failure::from),
            }
        })
        .manual_ack();
        let app = start(nats.clone(), subscriber).await;
        publish(&nats, [1, 2]).await;

        let calls = seen.wait_calls(4).await;
        for id in [1, 2] {
            let job: Vec<_> = calls.iter().filter(|c| c.id == id).collect();
            assert_eq!(job.len(), 2, "job {id}: {calls:?}");
            assert_eq!((job[0].delivery, job[1].delivery), (1, 2));
            let gap = job[1].at - job[0].at;
            assert!(
                gap + SLACK >= ACK_WAIT,
                "job {id} came back {gap:?} after its nak, before the ack wait"
            );
            assert!(
                gap < ACK_WAIT + Duration::from_secs(3),
                "job {id} came back only {gap:?} after its nak"
            );
        }
        stop(app).await;
    }

    /// Instead of `headers_round_trip`: there are no headers. What a
    /// publisher sets (headers, a message id) is dropped; the payload arrives.
    pub async fn headers_are_dropped(harness: &StanHarness) {
        let nats = harness.connect().await;
        let seen = Seen::new();
        let app = start(nats.clone(), super::super::apps::acking(&seen)).await;
        let mut headers = Headers::new();
        headers.insert("X-Conformance", "round trip");
        let options = PublishOptions::new().headers(headers).message_id("job-1");
        publish_with(&nats, 1, options).await;

        let calls = seen.wait_calls(1).await;
        assert_eq!(calls[0].id, 1, "the payload arrives");
        assert!(
            calls[0].headers.as_ref().is_none_or(Headers::is_empty),
            "NATS Streaming delivered headers: {:?}",
            calls[0].headers
        );
        stop(app).await;
    }

    /// Instead of `deduplication_by_message_id`: there is no de-duplication.
    /// A message id is not sent, a second publish with the same id is stored
    /// again and handled again, and the receipt has no sequence (0) and never
    /// says duplicate.
    pub async fn duplicates_are_stored_twice(harness: &StanHarness) {
        let nats = harness.connect().await;
        let once = |id: &str| PublishOptions::new().message_id(id);
        let first = publish_with(&nats, 1, once("a")).await;
        let again = publish_with(&nats, 1, once("a")).await;
        let other = publish_with(&nats, 2, once("b")).await;
        for receipt in [&first, &again, &other] {
            assert!(!receipt.duplicate, "a receipt says duplicate: {receipt:?}");
            assert_eq!(receipt.sequence, 0, "a receipt has a sequence: {receipt:?}");
        }
        assert_eq!(
            harness.double().stored(CHANNEL),
            3,
            "the duplicate is stored"
        );

        let seen = Seen::new();
        let app = start(
            nats.clone(),
            super::super::apps::acking(&seen).max_in_flight(1),
        )
        .await;
        publish(&nats, [3]).await;
        let calls = seen
            .wait_for("job 3", |calls| calls.iter().any(|c| c.id == 3))
            .await;
        let ids: Vec<u64> = calls.iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![1, 1, 2, 3]);
        let sequences: Vec<u64> = calls.iter().map(|c| c.sequence).collect();
        assert_eq!(sequences, vec![1, 2, 3, 4]);
        stop(app).await;
    }

    /// Instead of `durable_resume`: a (non-queue) durable belongs to its
    /// client id. An app restarted on a new connection under the same client
    /// id (after the old one closed) resumes after what it acked; a client
    /// with another id gets a durable of its own from its start position.
    pub async fn durable_belongs_to_its_client_id(harness: &StanHarness) {
        let publisher = harness.connect().await;
        let seen = Seen::new();
        let durable = |member| {
            recording(&seen, member, |_| async { Ok(()) })
                .durable("resume")
                .start(StartPosition::All)
        };
        let before = harness.connect_as("billing-a").await;
        let first = start(before.clone(), durable(1)).await;
        publish(&publisher, 1..=3).await;
        seen.wait_calls(3).await;
        stop(first).await;
        before.close().await.expect("the first client closes");
        assert!(harness.double().has_durable(CHANNEL, "resume"));

        publish(&publisher, 4..=6).await;
        let restarted = start(harness.connect_as("billing-a").await, durable(2)).await;
        let calls = seen.wait_calls(6).await;
        let resumed: Vec<u64> = calls
            .iter()
            .filter(|c| c.member == 2)
            .map(|c| c.id)
            .collect();
        assert_eq!(resumed, vec![4, 5, 6], "same client id: resumed");
        assert!(calls.iter().all(|c| c.delivery == 1));

        let other = start(harness.connect_as("billing-b").await, durable(3)).await;
        let calls = seen.wait_calls(12).await;
        let fresh: Vec<u64> = calls
            .iter()
            .filter(|c| c.member == 3)
            .map(|c| c.id)
            .collect();
        assert_eq!(
            fresh,
            vec![1, 2, 3, 4, 5, 6],
            "another client id: a new durable"
        );
        let calls = seen.after_quiet(QUIET).await;
        assert_eq!(calls.len(), 12, "a redelivery: {calls:?}");
        stop(restarted).await;
        stop(other).await;
    }

    /// Instead of `start_time`: the protocol sends the start time as a delta
    /// from the client's clock when it subscribes, which the server takes
    /// back from its own clock when the request arrives. The start is exact
    /// only to within the request's transit (and the clocks' skew): a message
    /// stored right after the start time can be missed. With a margin
    /// between the start time and the messages either side of it, the
    /// subscriber sees exactly what was stored after it.
    pub async fn start_time_is_a_delta_on_the_server_clock(harness: &StanHarness) {
        const MARGIN: Duration = Duration::from_millis(300);
        let nats = harness.connect().await;
        publish(&nats, 1..=3).await;
        let at = SystemTime::now();
        // Not a synchronisation: the wall clock must move on past the margin.
        tokio::time::sleep(MARGIN).await;
        publish(&nats, 4..=5).await;
        let seen = Seen::new();
        let app = start(
            nats.clone(),
            recording(&seen, 0, |_| async { Ok(()) }).start(StartPosition::Time(at)),
        )
        .await;
        publish(&nats, 6..=7).await;
        seen.wait_calls(4).await;
        let ids = seen.after_quiet(QUIET).await;
        let ids: Vec<u64> = ids.iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![4, 5, 6, 7]);

        let requests = harness.double().subscription_requests();
        let request = requests.last().expect("a subscription request");
        assert_eq!(
            request.start_position(),
            proto::StartPosition::TimeDeltaStart
        );
        let delta = Duration::from_nanos(u64::try_from(request.start_time_delta).unwrap_or(0));
        assert!(
            delta >= MARGIN,
            "the delta {delta:?} is not from the start time"
        );
        stop(app).await;
    }

    /// NATS Streaming has no wildcard subscriptions: an app with a
    /// subscriber of `conformance.orders.*` does not start, and says why and
    /// what to do instead; nothing of it is subscribed.
    pub async fn wildcard_channels_are_refused(harness: &StanHarness) {
        let stan = harness.connect().await;
        let seen = Seen::new();
        let subscriber = recording(&seen, 0, |_| async { Ok(()) });
        let wildcard =
            flowgate::Subscriber::new("conformance.orders.*", |_: super::super::Job| async {
                Ok::<(), Failure>(())
            });
        let err = flowgate::App::new()
            .subscriber(wildcard)
            .subscriber(subscriber)
            .start(stan)
            .await
            .expect_err("a wildcard subscriber cannot start on NATS Streaming");
        let message = err.to_string();
        assert!(message.contains("`conformance.orders.*`"), "{message}");
        assert!(
            message.contains("NATS Streaming has no wildcard subscriptions"),
            "{message}"
        );
        assert!(message.contains("JetStream"), "{message}");
        assert_eq!(
            harness.double().active_subscriptions(CHANNEL),
            0,
            "nothing subscribed"
        );
    }
}
