//! Which stream a wildcard channel reads on a real JetStream server: one
//! that covers the whole pattern (the user's own, or one flowgate makes),
//! never one that holds only part of it; and the typed publisher's
//! `publish_to` rule end to end.

use flowgate::{App, Message, Publisher, Subscriber, SubscriptionSpec, Transport};
use flowgate_tests::{init_tracing, JobError, NatsServer};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "e2e.wild.*")]
struct WildJob {
    id: u64,
}

async fn consumer_names(nats: &flowgate::JetStream, stream: &str) -> Vec<String> {
    use futures::TryStreamExt;
    let stream = nats
        .context()
        .get_stream(stream)
        .await
        .expect("stream exists");
    let mut names: Vec<String> = stream.consumer_names().try_collect().await.expect("listed");
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_binds_the_users_stream_that_covers_it() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    nats.context()
        .create_stream(async_nats::jetstream::stream::Config {
            name: "E2E".into(),
            subjects: vec!["e2e.>".into()],
            ..Default::default()
        })
        .await
        .expect("stream created");
    let spec = SubscriptionSpec::new("e2e.wild.*").with_durable("wild");
    let _subscription = nats.subscribe(&spec).await.expect("subscribed");
    assert_eq!(consumer_names(&nats, "E2E").await, ["wild"]);
    assert_eq!(
        nats.ensure_stream("e2e.wild.*").await.expect("known"),
        "E2E"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_no_stream_holds_gets_a_stream_named_for_it() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    assert_eq!(
        nats.ensure_stream("e2e.wild.*").await.expect("created"),
        "e2e_wild_any"
    );
    assert_eq!(
        nats.ensure_stream("e2e.rest.>").await.expect("created"),
        "e2e_rest_all"
    );
    // A concrete subject the pattern matches is published into that stream.
    let ack = Publisher::new(nats.clone())
        .publish_to("e2e.wild.placed", &WildJob { id: 1 })
        .await
        .expect("stored");
    assert_eq!((ack.stream.as_str(), ack.sequence), ("e2e_wild_any", 1));
    let ack = Publisher::new(nats.clone())
        .publish_with(
            &WildJob { id: 2 },
            flowgate::PublishOptions::new().channel("e2e.rest.eu.placed"),
        )
        .await
        .expect("stored");
    assert_eq!(ack.stream, "e2e_rest_all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_holding_part_of_a_pattern_stops_the_start_with_what_to_do() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    // Published before any subscriber of the pattern: a stream for the one subject.
    Publisher::new(nats.clone())
        .publish_to("e2e.wild.placed", &WildJob { id: 1 })
        .await
        .expect("stored");
    let handler = |_: Message<WildJob>| async { Ok::<(), JobError>(()) };
    let err = App::new()
        .subscriber(Subscriber::new("e2e.wild.*", handler).durable("wild"))
        .start(nats.clone())
        .await
        .expect_err("no stream holds all of e2e.wild.*");
    let message = err.to_string();
    assert!(
        message.contains("`e2e_wild_placed` holds e2e.wild.placed"),
        "{message}"
    );
    assert!(
        message.contains("nats stream edit e2e_wild_placed"),
        "{message}"
    );
    assert!(consumer_names(&nats, "e2e_wild_placed").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_type_is_published_only_with_publish_to() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let publisher = Publisher::new(nats.clone());
    let err = publisher
        .publish(&WildJob { id: 1 })
        .await
        .expect_err("a pattern");
    assert!(err.to_string().contains("publish_to"), "{err}");
    let err = publisher
        .publish_to("e2e.other.placed", &WildJob { id: 1 })
        .await
        .expect_err("not matched");
    assert!(err.to_string().contains("`e2e.other.placed`"), "{err}");
    let names: Vec<String> = {
        use futures::TryStreamExt;
        nats.context()
            .stream_names()
            .try_collect()
            .await
            .expect("listed")
    };
    assert!(names.is_empty(), "nothing reached the server: {names:?}");
}
