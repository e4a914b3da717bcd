//! Publishing through faults, on a real JetStream server: a window of 256
//! outstanding acks runs through a server kill -9 and restart; every event
//! is either stored or handed back by its number, and the window is back at
//! full speed within seconds of the server's return.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowgate::{PublishError, PublishOptions, Publisher};
use flowgate_tests::{eventually, init_tracing, stored_messages, NatsServer};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "faults.publish.window")]
struct Job {
    id: u64,
}

/// The window numbers a failed publish reports.
fn reported(err: PublishError, into: &mut BTreeSet<u64>) {
    match err {
        PublishError::NotStored { failures } => {
            assert!(!failures.is_empty(), "NotStored names its events");
            for failure in failures {
                let job: Job = serde_json::from_slice(&failure.payload).expect("payload kept");
                assert_eq!(job.id, failure.number, "the payload is the event's own");
                assert_eq!(
                    failure.message_id.as_deref(),
                    Some(job.id.to_string().as_str())
                );
                into.insert(failure.number);
            }
        }
        other => panic!("a window failure names its events, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_through_a_server_crash_accounts_for_every_event_and_recovers() {
    const WINDOW: usize = 256;
    const AFTER_RESTART: u64 = 2000;
    init_tracing();
    let mut server = NatsServer::start().await;
    let options = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .reconnect_delay_callback(|_| Duration::from_millis(100));
    let nats = flowgate::JetStream::connect_with_options(&server.url(), options)
        .await
        .expect("connect");
    nats.ensure_stream("faults.publish.window")
        .await
        .expect("stream");

    let published = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let publisher = {
        let (nats, published, stop) = (nats.clone(), published.clone(), stop.clone());
        tokio::spawn(async move {
            let mut window = Publisher::new(nats).window(WINDOW);
            let mut failed = BTreeSet::new();
            let mut id = 0;
            while !stop.is_cancelled() {
                let options = PublishOptions::new().message_id(id.to_string());
                match window.publish_with(&Job { id }, options).await {
                    Ok(number) => assert_eq!(number, id, "numbers count the publishes"),
                    Err(err) => reported(err, &mut failed),
                }
                id += 1;
                published.store(id, Ordering::SeqCst);
            }
            if let Err(err) = window.flush().await {
                reported(err, &mut failed);
            }
            (id, failed)
        })
    };

    let warm = eventually(Duration::from_secs(10), || async {
        published.load(Ordering::SeqCst) > 1000
    })
    .await;
    assert!(warm, "the window publishes before the crash");
    server.kill();
    server.restart().await;
    let up = Instant::now();
    let at_restart = published.load(Ordering::SeqCst);
    let recovered = eventually(Duration::from_secs(20), || async {
        published.load(Ordering::SeqCst) >= at_restart + AFTER_RESTART
    })
    .await;
    let took = up.elapsed();
    stop.cancel();
    let (total, failed) = publisher.await.expect("the publisher did not panic");
    assert!(
        recovered,
        "the window published {} events in the 20 s after the server's return",
        published.load(Ordering::SeqCst) - at_restart
    );

    let stored: BTreeSet<u64> = stored_messages(&nats, "faults.publish.window")
        .await
        .iter()
        .map(|m| serde_json::from_slice::<Job>(&m.payload).expect("a job").id)
        .collect();
    let lost: Vec<u64> = (0..total)
        .filter(|id| !stored.contains(id) && !failed.contains(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} events neither stored nor reported (of {total}; {} stored, {} reported): {:?}",
        lost.len(),
        stored.len(),
        failed.len(),
        &lost[..lost.len().min(20)]
    );
    eprintln!(
        "{total} published, {} stored, {} reported not stored; {AFTER_RESTART} more published {took:?} after the server's return",
        stored.len(),
        failed.len()
    );
}
