//! Connecting with the async-nats options users already know.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowgate::{App, Error, JetStream, Publisher, Subscriber};
use flowgate_tests::{eventually, NatsServer};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "connect.pings")]
struct Ping {
    n: u32,
}

#[tokio::test]
async fn token_auth_is_required_and_then_works_end_to_end() {
    flowgate_tests::init_tracing();
    let server = NatsServer::start_with_token("s3cr3t").await;

    let refused = JetStream::connect(&server.url()).await;
    match refused {
        Err(Error::Connect { url, .. }) => assert_eq!(url, server.url()),
        other => {
            panic!("connecting without the token should fail with Error::Connect, got {other:?}")
        }
    }

    let options = async_nats::ConnectOptions::with_token("s3cr3t".to_owned());
    let nats = JetStream::connect_with_options(&server.url(), options)
        .await
        .expect("the token lets the client in");

    let handled = Arc::new(AtomicUsize::new(0));
    let counter = handled.clone();
    let app = App::new()
        .subscriber(
            Subscriber::new("connect.pings", move |_ping: Ping| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, std::convert::Infallible>(())
                }
            })
            .durable("pinger"),
        )
        .start(nats.clone())
        .await
        .expect("app starts on the authenticated connection");
    let publisher = Publisher::new(nats);
    for n in 0..10 {
        publisher.publish(&Ping { n }).await.expect("published");
    }
    let all = eventually(Duration::from_secs(10), || async {
        handled.load(Ordering::SeqCst) == 10
    })
    .await;
    assert!(all, "handled {} of 10", handled.load(Ordering::SeqCst));
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn bad_channel_name_is_refused_before_reaching_the_server() {
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let app = App::new().subscriber(Subscriber::new("orders.*x", |_ping: Ping| async {
        Ok::<_, std::convert::Infallible>(())
    }));
    let err = app
        .start(nats)
        .await
        .expect_err("a malformed pattern is refused");
    assert!(matches!(err, Error::Name(_)), "got {err:?}");
    assert!(
        err.to_string().contains("orders.*x"),
        "message names the channel: {err}"
    );
}

#[tokio::test]
async fn a_durable_the_server_refuses_to_create_says_why() {
    use async_nats::jetstream::stream::{Config, RetentionPolicy, StorageType};
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    nats.context()
        .create_stream(Config {
            name: "refusing".into(),
            subjects: vec!["connect.work".into()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::Memory,
            ..Config::default()
        })
        .await
        .expect("work-queue stream");
    // A work-queue stream takes only consumers that start at its first
    // message; the default start is `new`.
    let app = App::new().subscriber(
        Subscriber::new("connect.work", |_ping: Ping| async {
            Ok::<_, std::convert::Infallible>(())
        })
        .durable("worker"),
    );
    let err = app
        .start(nats)
        .await
        .expect_err("the server refuses the consumer");
    let text = err.to_string();
    assert!(
        !text.contains("consumer not found"),
        "the creation's refusal is reported, not the lookup before it: {text}"
    );
    assert!(
        text.contains("deliver all") && text.contains("10101"),
        "the server's reason is in the error: {text}"
    );
}
