//! The health example's endpoints against a real nats-server: `/readyz`
//! answers 200, 503 while the server is down, 200 again after its restart;
//! `/healthz` stays 200 throughout; `/metrics` serves the backlog gauges.

use std::net::SocketAddr;
use std::time::Duration;

use flowgate::{App, Failure, HealthPolicy, Subscriber};
use flowgate_tests::{eventually, NatsServer};
use metrics_exporter_prometheus::PrometheusBuilder;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "e2e.health.http")]
struct Ping {
    id: u64,
}

/// `GET path` over a fresh connection: the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the endpoints listen");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("sent");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("an answer");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_server_and_metrics_share_the_port() {
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of this test binary");
    let mut server = NatsServer::start().await;
    let app = App::new()
        .health_policy(HealthPolicy {
            sample_every: Duration::from_secs(1),
            ..Default::default()
        })
        .subscriber(
            Subscriber::new("e2e.health.http", |_: Ping| async { Ok::<(), Failure>(()) })
                .durable("http"),
        )
        .start(server.jetstream().await)
        .await
        .expect("app starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let addr = listener.local_addr().expect("bound");
    let endpoints = flowgate_bench::ops::router(app.health_probe(), metrics);
    tokio::spawn(async move { axum::serve(listener, endpoints).await });

    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("connected"), "{body}");
    let sampled = eventually(Duration::from_secs(10), || async {
        get(addr, "/metrics").await.1.contains(
            "flowgate_consumer_pending_messages{channel=\"e2e.health.http\",durable=\"http\",queue=\"\"} 0",
        )
    })
    .await;
    assert!(
        sampled,
        "the gauges on /metrics: {}",
        get(addr, "/metrics").await.1
    );

    server.kill();
    let unready = eventually(Duration::from_secs(10), || async {
        get(addr, "/readyz").await.0 == 503
    })
    .await;
    assert!(
        unready,
        "503 while the server is down: {:?}",
        get(addr, "/readyz").await
    );
    assert_eq!(get(addr, "/healthz").await.0, 200, "still live");

    server.restart().await;
    let ready = eventually(Duration::from_secs(30), || async {
        get(addr, "/readyz").await.0 == 200
    })
    .await;
    assert!(
        ready,
        "200 after the restart: {:?}",
        get(addr, "/readyz").await
    );
    app.shutdown().await.expect("clean shutdown");
}
