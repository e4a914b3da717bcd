//! The fault-injection helpers themselves, against real servers: the proxy
//! holds and releases bytes, delays them, cuts and refuses connections (and
//! the client comes back through it); a cluster survives losing a stream's
//! leader; the broker-side faults do what they say.

use std::time::Duration;

use async_nats::jetstream::stream::{Config, StorageType};
use async_nats::Event;
use flowgate_tests::fault::{delete_consumer, full_stream, purge_stream, stream_of, Direction};
use flowgate_tests::{eventually, init_tracing, round_trip, FaultProxy, NatsCluster, NatsServer};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a test waits for something that should happen at once.
const SOON: Duration = Duration::from_secs(10);

/// Connects through `proxy` with the fault-test options, and returns the
/// client's connection events as they happen.
async fn connect_watched(
    proxy: &FaultProxy,
) -> (flowgate::JetStream, mpsc::UnboundedReceiver<Event>) {
    let (events_tx, events) = mpsc::unbounded_channel();
    let options = FaultProxy::connect_options().event_callback(move |event| {
        let events_tx = events_tx.clone();
        async move {
            let _ = events_tx.send(event);
        }
    });
    (proxy.jetstream_with(options).await, events)
}

/// Waits for the next event that is `wanted` (skipping others) and returns
/// when it came.
async fn next_event(events: &mut mpsc::UnboundedReceiver<Event>, wanted: Wanted) -> Instant {
    let deadline = Instant::now() + SOON;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) if wanted.matches(&event) => return Instant::now(),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the client's event channel closed before `{wanted}`"),
            Err(_) => panic!("no `{wanted}` event within {SOON:?}"),
        }
    }
}

/// A connection event to wait for.
#[derive(Debug, Clone, Copy)]
enum Wanted {
    Connected,
    Disconnected,
}

impl Wanted {
    fn matches(self, event: &Event) -> bool {
        match self {
            Wanted::Connected => matches!(event, Event::Connected),
            Wanted::Disconnected => matches!(event, Event::Disconnected),
        }
    }
}

impl std::fmt::Display for Wanted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Answers every request on `subject` with "pong", on a direct connection
/// to `server` (not through any proxy); returns the client and how many
/// requests it answered.
async fn responder(
    server: &NatsServer,
    subject: &str,
) -> (
    async_nats::Client,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let client = async_nats::connect(server.url())
        .await
        .unwrap_or_else(|e| panic!("responder connects: {e}"));
    let mut requests = client
        .subscribe(subject.to_owned())
        .await
        .unwrap_or_else(|e| panic!("responder subscribes: {e}"));
    round_trip(&client)
        .await
        .unwrap_or_else(|e| panic!("responder's subscription in effect: {e}"));
    let answered = std::sync::Arc::new(AtomicUsize::new(0));
    let (replier, count) = (client.clone(), answered.clone());
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            if let Some(reply) = request.reply {
                let _ = replier.publish(reply, "pong".into()).await;
                let _ = replier.flush().await;
                count.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (client, answered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freezing_server_to_client_holds_the_reply_until_thaw() {
    use std::sync::atomic::Ordering;
    init_tracing();
    let server = NatsServer::start().await;
    let proxy = FaultProxy::start(&server).await;
    let (_responder, answered) = responder(&server, "e2e.faults.echo").await;
    let nats = proxy.jetstream().await;
    let client = nats.client().clone();

    let reply = client
        .request("e2e.faults.echo", "ping".into())
        .await
        .unwrap_or_else(|e| panic!("a request before the freeze: {e}"));
    assert_eq!(&reply.payload[..], b"pong");

    proxy.freeze(Direction::ServerToClient);
    let forwarded_at_freeze = proxy.bytes_forwarded(Direction::ServerToClient);
    let mut pending = tokio::spawn({
        let client = client.clone();
        async move { client.request("e2e.faults.echo", "ping".into()).await }
    });
    // The request gets through and is answered: the reply is in the proxy.
    let answered_twice = eventually(SOON, || async { answered.load(Ordering::SeqCst) == 2 }).await;
    assert!(
        answered_twice,
        "the request did not reach the responder during the freeze"
    );
    let timed_out = tokio::time::timeout(Duration::from_millis(500), &mut pending).await;
    assert!(
        timed_out.is_err(),
        "the reply got through a frozen server-to-client direction: {timed_out:?}"
    );
    assert_eq!(
        proxy.bytes_forwarded(Direction::ServerToClient),
        forwarded_at_freeze,
        "bytes were forwarded to the client while frozen"
    );
    assert_eq!(
        proxy.open_connections(),
        1,
        "the freeze closed the connection"
    );

    proxy.thaw(Direction::ServerToClient);
    let reply = tokio::time::timeout(SOON, pending)
        .await
        .unwrap_or_else(|_| panic!("the held reply was not delivered within {SOON:?} of the thaw"))
        .unwrap_or_else(|e| panic!("the request task: {e}"))
        .unwrap_or_else(|e| panic!("the held request failed after the thaw: {e}"));
    assert_eq!(&reply.payload[..], b"pong");
    assert!(proxy.bytes_forwarded(Direction::ServerToClient) > forwarded_at_freeze);
    assert_eq!(
        proxy.accepted(),
        1,
        "the client reconnected: the freeze was not a freeze"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_adds_latency_to_one_direction() {
    init_tracing();
    let server = NatsServer::start().await;
    let proxy = FaultProxy::start(&server).await;
    let nats = proxy.jetstream().await;
    let client = nats.client();

    let latency = Duration::from_millis(300);
    proxy.delay(Direction::ClientToServer, latency);
    let started = Instant::now();
    round_trip(client)
        .await
        .unwrap_or_else(|e| panic!("a round trip with latency: {e}"));
    let delayed = started.elapsed();
    assert!(
        delayed >= latency,
        "a round trip took {delayed:?} with {latency:?} added"
    );

    proxy.delay(Direction::ClientToServer, Duration::ZERO);
    // Order is kept: bytes read while delayed (the first round trip's UNSUB)
    // still go first. Once a round trip is through, nothing delayed is left.
    round_trip(client)
        .await
        .unwrap_or_else(|e| panic!("a round trip behind the last delayed bytes: {e}"));
    let started = Instant::now();
    round_trip(client)
        .await
        .unwrap_or_else(|e| panic!("a round trip without latency: {e}"));
    let plain = started.elapsed();
    assert!(
        plain < latency,
        "a round trip took {plain:?} after the delay was removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_makes_the_client_reconnect_through_the_proxy() {
    init_tracing();
    let server = NatsServer::start_with_args(["--no_advertise"]).await;
    assert!(server.pid().is_some(), "a started server has a pid");
    let proxy = FaultProxy::start(&server).await;
    let (nats, mut events) = connect_watched(&proxy).await;
    let client = nats.client();
    round_trip(client)
        .await
        .unwrap_or_else(|e| panic!("a round trip before the cut: {e}"));
    assert_eq!(proxy.accepted(), 1);

    let cut_at = Instant::now();
    proxy.cut();
    next_event(&mut events, Wanted::Disconnected).await;
    let reconnected_at = next_event(&mut events, Wanted::Connected).await;
    println!(
        "reconnected through the proxy {:?} after the cut",
        reconnected_at - cut_at
    );

    assert_eq!(
        proxy.accepted(),
        2,
        "the client should have reconnected once, through the proxy"
    );
    round_trip(client)
        .await
        .unwrap_or_else(|e| panic!("a round trip after the reconnect: {e}"));
    let stream = nats.ensure_stream("e2e.faults.after_cut").await;
    assert!(stream.is_ok(), "JetStream after the reconnect: {stream:?}");
    assert_eq!(proxy.open_connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_keep_the_client_out_until_let_in() {
    init_tracing();
    let server = NatsServer::start().await;
    let proxy = FaultProxy::start(&server).await;
    let (nats, mut events) = connect_watched(&proxy).await;
    let client = nats.client();

    proxy.refuse(true);
    proxy.cut();
    next_event(&mut events, Wanted::Disconnected).await;
    let retried = eventually(SOON, || async { proxy.refused() >= 3 }).await;
    assert!(
        retried,
        "the client tried {} times to reconnect while refused",
        proxy.refused()
    );
    assert_eq!(proxy.accepted(), 1, "a connection got in while refusing");
    assert_eq!(
        client.connection_state(),
        async_nats::connection::State::Disconnected
    );

    proxy.refuse(false);
    next_event(&mut events, Wanted::Connected).await;
    assert_eq!(proxy.accepted(), 2);
    round_trip(client)
        .await
        .unwrap_or_else(|e| panic!("a round trip once let in: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_with_a_config_file_reads_it() {
    init_tracing();
    let mut server = NatsServer::start_with_config("server_name: \"from-config\"\n").await;
    let pid = server.pid();
    assert!(pid.is_some(), "a started server has a pid");
    let nats = server.jetstream().await;
    assert_eq!(nats.client().server_info().server_name, "from-config");
    server.kill();
    assert_eq!(server.pid(), None, "a killed server has no pid");
    server.restart().await;
    assert_ne!(server.pid(), pid, "the restart is a new process");
    let nats = server.jetstream().await;
    assert_eq!(
        nats.client().server_info().server_name,
        "from-config",
        "the restart read the config again"
    );
}

/// Why the stream refuses one more message on `subject`; "stored" when it
/// stores it.
async fn refusal(context: &async_nats::jetstream::Context, subject: &str) -> String {
    match context.publish(subject.to_owned(), "one more".into()).await {
        Ok(ack) => match ack.await {
            Ok(_) => "stored".to_owned(),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_faults_fill_purge_and_delete() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let context = nats.context();

    // A full stream refuses the next message.
    let full = full_stream(&nats, "dlq.e2e.faults").await;
    assert_eq!(
        stream_of(&nats, "dlq.e2e.faults").await.as_deref(),
        Some(full.as_str())
    );
    let refused = refusal(context, "dlq.e2e.faults").await;
    assert!(
        refused.contains("maximum messages"),
        "a full stream should refuse another message, not: {refused}"
    );

    // Purged, it stores one again (and is full again).
    purge_stream(&nats, &full).await;
    let stored = context
        .publish("dlq.e2e.faults", "after purge".into())
        .await
        .unwrap_or_else(|e| panic!("publish after the purge: {e}"))
        .await;
    assert!(
        stored.is_ok(),
        "the purged stream refused a message: {stored:?}"
    );

    // A stream that exists already is made full too.
    let orders = context
        .create_stream(Config {
            name: "faults_orders".into(),
            subjects: vec!["e2e.faults.orders".into()],
            storage: StorageType::Memory,
            ..Config::default()
        })
        .await
        .unwrap_or_else(|e| panic!("creating the orders stream: {e}"));
    for n in 0..3 {
        context
            .publish("e2e.faults.orders", format!("{n}").into())
            .await
            .unwrap_or_else(|e| panic!("publish {n}: {e}"))
            .await
            .unwrap_or_else(|e| panic!("ack of {n}: {e}"));
    }
    assert_eq!(
        full_stream(&nats, "e2e.faults.orders").await,
        "faults_orders"
    );
    let refused = refusal(context, "e2e.faults.orders").await;
    assert!(
        refused.contains("maximum messages"),
        "the filled orders stream should refuse another message, not: {refused}"
    );

    // A deleted consumer is gone.
    orders
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("billing".into()),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("creating the consumer: {e}"));
    delete_consumer(&nats, "faults_orders", "billing").await;
    let lookup = orders
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>("billing")
        .await;
    assert!(lookup.is_err(), "the deleted consumer is still there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_elects_a_new_stream_leader_when_the_leader_is_killed() {
    const STORED: u64 = 10;
    init_tracing();
    let started = Instant::now();
    let mut cluster = NatsCluster::start(3).await;
    println!("3-node cluster ready in {:?}", started.elapsed());
    let nats = cluster.jetstream().await;
    let context = nats.context();
    context
        .create_stream(Config {
            name: "failover".into(),
            subjects: vec!["e2e.failover.>".into()],
            num_replicas: 3,
            ..Config::default()
        })
        .await
        .unwrap_or_else(|e| panic!("creating the R3 stream: {e}\n{}", cluster.logs()));
    for n in 0..STORED {
        context
            .publish("e2e.failover.orders", format!("{n}").into())
            .await
            .unwrap_or_else(|e| panic!("publish {n}: {e}"))
            .await
            .unwrap_or_else(|e| panic!("ack of {n}: {e}"));
    }
    let leader = cluster.wait_for_stream_leader("failover").await;

    let killed_at = Instant::now();
    cluster.kill(leader);
    assert!(!cluster.is_running(leader));
    let next = cluster.wait_for_stream_leader("failover").await;
    println!(
        "stream leader n{leader} killed; n{next} leads {:?} later",
        killed_at.elapsed()
    );
    assert_ne!(next, leader, "the killed node still leads");

    // The stream answers, with every message published before the kill.
    let survivor = (0..cluster.size())
        .find(|&index| cluster.is_running(index))
        .unwrap_or_else(|| panic!("no node left running"));
    let direct = async_nats::ConnectOptions::new()
        .ignore_discovered_servers()
        .connect(cluster.node(survivor))
        .await
        .unwrap_or_else(|e| panic!("connecting to node {survivor}: {e}"));
    let direct = async_nats::jetstream::new(direct);
    let all_there = eventually(SOON, || async {
        match direct.get_stream("failover").await {
            Ok(mut stream) => stream
                .info()
                .await
                .is_ok_and(|info| info.state.messages == STORED),
            Err(_) => false,
        }
    })
    .await;
    assert!(
        all_there,
        "the stream does not answer with its {STORED} messages after the failover\n{}",
        cluster.logs()
    );
    let stored = eventually(SOON, || async {
        match direct.publish("e2e.failover.orders", "after".into()).await {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(
        stored,
        "the stream does not store a message after the failover"
    );

    // The old leader comes back under its name and catches up as a replica.
    cluster.restart(leader).await;
    assert!(cluster.is_running(leader));
    let name = cluster.server_name(leader).to_owned();
    let client = cluster.client().await;
    let rejoined = eventually(SOON, || async {
        let Ok(reply) = client
            .request("$JS.API.STREAM.INFO.failover", "".into())
            .await
        else {
            return false;
        };
        let info: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap_or_default();
        info.pointer("/cluster/replicas")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|replicas| {
                replicas
                    .iter()
                    .any(|replica| replica["name"] == name.as_str() && replica["current"] == true)
            })
    })
    .await;
    assert!(
        rejoined,
        "the restarted node {name} is not a current replica of the stream\n{}",
        cluster.logs()
    );
}
