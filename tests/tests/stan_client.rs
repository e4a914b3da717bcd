//! The NATS Streaming client state machine against the protocol double:
//! heartbeats answered, pings lost or refused → registers again and
//! subscriptions follow, server gone and back, close vs unsubscribe of a
//! durable, client-id validation and the client-id-in-use check.

use std::time::Duration;

use flowgate::transport::stan::{StanState, SubscriptionEnd};
use flowgate::{
    Acker, Error, NatsStreaming, OutgoingMessage, StanOptions, SubscriptionSpec, Transport,
};
use flowgate_tests::stan_double::StanDouble;
use flowgate_tests::{eventually, init_tracing, NatsServer};
use futures::StreamExt;

const DEADLINE: Duration = Duration::from_secs(15);

async fn setup(client_id: &str) -> (NatsServer, StanDouble, NatsStreaming) {
    flowgate_tests::stan_double::start_with_client(client_id).await
}

async fn publish_until_acked(stan: &NatsStreaming, channel: &str, payload: &'static str) {
    let ok = eventually(DEADLINE, || async {
        match stan.publish(OutgoingMessage::new(channel, payload)).await {
            Ok(pending) => pending.await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(ok, "publish never acked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_heartbeats_are_answered() {
    let (_server, double, stan) = setup("hb-client").await;
    assert_eq!(stan.state(), StanState::Registered);
    let answered = eventually(DEADLINE, || async {
        double.heartbeat_replies("hb-client") >= 3
    })
    .await;
    assert!(
        answered,
        "heartbeat replies: {}",
        double.heartbeat_replies("hb-client")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_pings_make_the_client_register_again_and_resubscribe() {
    let (_server, double, stan) = setup("ping-client").await;
    let mut spec = SubscriptionSpec::new("stan.pings");
    spec.durable = Some("d".into());
    let mut sub = stan.subscribe_spec(&spec).await.expect("subscribed");
    double.answer_pings(false);
    let again = eventually(DEADLINE, || async { stan.registrations() >= 2 }).await;
    assert!(again, "registrations: {}", stan.registrations());
    double.answer_pings(true);
    assert!(double.connect_requests() >= 2);
    // The subscription followed the new registration.
    publish_until_acked(&stan, "stan.pings", "after").await;
    let delivery = tokio::time::timeout(DEADLINE, sub.next())
        .await
        .expect("delivered after re-registration")
        .expect("open");
    assert_eq!(&delivery.payload[..], b"after");
    delivery.acker.ack().await.expect("acked");
    assert_eq!(
        double.active_subscriptions("stan.pings"),
        1,
        "no stale subscription"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_client_registers_again() {
    let (_server, double, stan) = setup("replaced-client").await;
    double.forget_client("replaced-client");
    let again = eventually(DEADLINE, || async {
        stan.registrations() >= 2 && double.clients().contains(&"replaced-client".to_owned())
    })
    .await;
    assert!(again, "the ping error did not trigger a new registration");
    assert_eq!(stan.state(), StanState::Registered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_gone_and_back_the_client_registers_and_subscribes_again() {
    let (_server, mut double, stan) = setup("gone-client").await;
    let mut spec = SubscriptionSpec::new("stan.gone");
    spec.durable = Some("keeper".into());
    let mut sub = stan.subscribe_spec(&spec).await.expect("subscribed");
    publish_until_acked(&stan, "stan.gone", "before").await;
    let first = tokio::time::timeout(DEADLINE, sub.next())
        .await
        .expect("in time")
        .expect("open");
    first.acker.ack().await.expect("acked");
    assert!(eventually(DEADLINE, || async { double.acks() >= 1 }).await);

    double.stop();
    let lost = eventually(DEADLINE, || async { stan.state() != StanState::Registered }).await;
    assert!(lost, "the client never noticed the server was gone");
    double.resume().await;
    let back = eventually(DEADLINE, || async {
        stan.state() == StanState::Registered && double.active_subscriptions("stan.gone") == 1
    })
    .await;
    assert!(
        back,
        "state {:?}, registrations {}",
        stan.state(),
        stan.registrations()
    );
    publish_until_acked(&stan, "stan.gone", "after").await;
    let next = tokio::time::timeout(DEADLINE, sub.next())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(
        &next.payload[..],
        b"after",
        "the durable resumed after `before`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_keeps_a_durable_and_unsubscribe_deletes_it() {
    let (_server, double, stan) = setup("end-client").await;
    let spec = SubscriptionSpec::new("stan.end").with_durable("kept");
    let sub = stan.subscribe_spec(&spec).await.expect("subscribed");
    assert!(double.has_durable("stan.end", "kept"));
    sub.close().await;
    assert_eq!(double.active_subscriptions("stan.end"), 0);
    assert!(
        double.has_durable("stan.end", "kept"),
        "close deleted the durable"
    );

    let sub = stan.subscribe_spec(&spec).await.expect("resubscribed");
    sub.unsubscribe().await;
    assert!(
        !double.has_durable("stan.end", "kept"),
        "unsubscribe kept the durable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_on_end_is_an_option_and_close_sends_the_close_request() {
    init_tracing();
    let server = NatsServer::start().await;
    let double = StanDouble::start(&server.url()).await;
    let options = StanOptions::new("opt-client").on_subscription_end(SubscriptionEnd::Unsubscribe);
    let stan = NatsStreaming::connect(&server.url(), options)
        .await
        .expect("registers");
    let spec = SubscriptionSpec::new("stan.opt").with_durable("gone");
    let sub = stan.subscribe(&spec).await.expect("subscribed");
    assert!(double.has_durable("stan.opt", "gone"));
    std::mem::forget(sub); // still live when the client closes
    stan.close().await.expect("closes");
    assert!(
        !double.has_durable("stan.opt", "gone"),
        "close did not unsubscribe"
    );
    assert_eq!(double.close_requests(), 1);
    assert!(double.clients().is_empty());
    assert_eq!(stan.state(), StanState::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_client_id_is_refused_before_connecting() {
    let err = NatsStreaming::connect("nats://127.0.0.1:1", StanOptions::new("orders.worker"))
        .await
        .expect_err("refused");
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("letters, digits"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_in_use_is_refused() {
    let (server, double, _stan) = setup("twin").await;
    let err = NatsStreaming::connect(&server.url(), StanOptions::new("twin"))
        .await
        .expect_err("the id is taken by a live client");
    assert!(err.to_string().contains("already registered"), "{err}");
    assert_eq!(
        double.refused_duplicates(),
        1,
        "the double checked the old heartbeat inbox"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_streaming_server_is_reported_as_no_responders_not_as_a_timeout() {
    init_tracing();
    let server = NatsServer::start().await;
    let options = StanOptions::new("lonely").connect_wait(Duration::from_secs(2));
    let err = NatsStreaming::connect(&server.url(), options)
        .await
        .expect_err("nobody answers");
    let text = err.to_string();
    assert!(text.contains("_STAN.discover.test-cluster"), "{text}");
    assert!(text.contains("no responders"), "says what happened: {text}");
    assert!(text.contains("cluster id"), "says what to check: {text}");
    assert!(!text.contains("within"), "no wait happened: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_server_that_does_not_answer_is_a_connect_timeout() {
    init_tracing();
    let server = NatsServer::start().await;
    // Something listens on the discover subject and never answers.
    let silent = async_nats::connect(server.url()).await.expect("connects");
    let _listening = silent
        .subscribe("_STAN.discover.test-cluster")
        .await
        .expect("subscribes");
    flowgate_tests::round_trip(&silent)
        .await
        .expect("in effect");
    let options = StanOptions::new("ignored").connect_wait(Duration::from_millis(300));
    let err = NatsStreaming::connect(&server.url(), options)
        .await
        .expect_err("nobody answers");
    let text = err.to_string();
    assert!(text.contains("within 300ms"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_client_frees_its_id() {
    let (server, double, stan) = setup("phoenix").await;
    drop(stan);
    // Nobody answers the old heartbeat inbox any more, so the id is free:
    // the streaming server's check finds the old client gone.
    let reborn = eventually(Duration::from_secs(10), || async {
        NatsStreaming::connect(&server.url(), StanOptions::new("phoenix"))
            .await
            .is_ok()
    })
    .await;
    assert!(reborn, "the id of a dropped client can be used again");
    assert_eq!(double.refused_duplicates(), 0, "no live twin was found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_of_the_process_costs_at_most_one_missed_ping() {
    init_tracing();
    let server = NatsServer::start().await;
    // Pings every 100 ms, lost after 3 without answer.
    let double = std::sync::Arc::new(StanDouble::start(&server.url()).await);
    let url = server.url();
    let watched = double.clone();
    // The client runs on a runtime and a thread of its own, so blocking that
    // thread stops the client and nothing else, as SIGSTOP stops a process.
    let (done, outcome) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the client");
        let result = runtime.block_on(async move {
            let stan = NatsStreaming::connect(&url, StanOptions::new("paused"))
                .await
                .expect("registers");
            let answered = watched.pings_answered();
            let pinged = eventually(DEADLINE, || async {
                watched.pings_answered() >= answered + 2
            })
            .await;
            assert!(pinged, "the client pings before the pause");
            // The pause: ten ping intervals without running at all.
            std::thread::sleep(Duration::from_millis(1000));
            // Three more answered pings after it: had the pause counted as
            // the pings it spanned, the client would have registered again.
            let answered = watched.pings_answered();
            let pinged = eventually(DEADLINE, || async {
                watched.pings_answered() >= answered + 3
            })
            .await;
            assert!(pinged, "the client pings after the pause");
            let registrations = stan.registrations();
            stan.close().await.expect("closes");
            registrations
        });
        let _ = done.send(result);
    });
    let registrations = tokio::time::timeout(DEADLINE, outcome)
        .await
        .expect("the client thread ends")
        .expect("the client thread did not panic");
    assert_eq!(registrations, 1, "the pause made the client register again");
    assert_eq!(double.connect_requests(), 1);
}

/// `client_id` registered twice: the double forgets the first holder (as
/// the real server does when the holder stopped answering heartbeats) and
/// the second takes the id; the first learns it at its next ping.
async fn replaced(
    client_id: &str,
    options: StanOptions,
) -> (NatsServer, StanDouble, NatsStreaming, NatsStreaming) {
    init_tracing();
    let server = NatsServer::start().await;
    let double = StanDouble::start(&server.url()).await;
    let first = NatsStreaming::connect(&server.url(), options)
        .await
        .expect("the first registers");
    double.forget_client(client_id);
    let second = NatsStreaming::connect(&server.url(), StanOptions::new(client_id))
        .await
        .expect("the second takes the id");
    (server, double, first, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_replaced_by_a_live_holder_of_its_id_stops_with_a_clear_error() {
    let (_server, double, first, second) = replaced("twin", StanOptions::new("twin")).await;
    let why = tokio::time::timeout(DEADLINE, first.closed())
        .await
        .expect("the replaced client stops instead of retrying forever");
    let why = why.expect("closed by itself, with a reason");
    let text = why.to_string();
    assert!(text.contains("`twin` was replaced"), "{text}");
    assert!(text.contains("keep_retrying_when_replaced"), "{text}");
    assert_eq!(first.state(), StanState::Closed);
    let publish = first
        .publish(OutgoingMessage::new("stan.twin", "late"))
        .await
        .expect_err("a closed client does not publish");
    assert!(publish.to_string().contains("was replaced"), "{publish}");
    // The holder of the id is untouched.
    publish_until_acked(&second, "stan.twin", "still works").await;
    assert_eq!(double.refused_duplicates(), 1, "tried once, then stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_client_ends_its_subscriptions() {
    init_tracing();
    let server = NatsServer::start().await;
    let double = StanDouble::start(&server.url()).await;
    let first = NatsStreaming::connect(&server.url(), StanOptions::new("twin-sub"))
        .await
        .expect("the first registers");
    let mut sub = first
        .subscribe_spec(&SubscriptionSpec::new("stan.twin"))
        .await
        .expect("subscribed");
    double.forget_client("twin-sub");
    let _second = NatsStreaming::connect(&server.url(), StanOptions::new("twin-sub"))
        .await
        .expect("the second takes the id");
    let ended = tokio::time::timeout(DEADLINE, sub.next())
        .await
        .expect("the subscription ends");
    assert!(ended.is_none(), "the subscription ends without a delivery");
    assert!(matches!(
        first.closed().await,
        Some(flowgate::transport::stan::StanError::Replaced { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_client_can_keep_retrying_until_the_id_is_free() {
    let options = StanOptions::new("patient").keep_retrying_when_replaced(true);
    let (_server, double, first, second) = replaced("patient", options).await;
    let refused = eventually(DEADLINE, || async { double.refused_duplicates() >= 2 }).await;
    assert!(refused, "it keeps trying: {}", double.refused_duplicates());
    assert_ne!(first.state(), StanState::Closed);
    second.close().await.expect("the holder leaves");
    let again = eventually(DEADLINE, || async {
        first.registrations() >= 2 && first.state() == StanState::Registered
    })
    .await;
    assert!(again, "registers once the id is free: {:?}", first.state());
}
