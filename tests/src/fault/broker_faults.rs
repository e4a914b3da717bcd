//! Faults on the broker's side: a consumer deleted under its subscriber, a
//! stream too full to store another message, a stream emptied.

use async_nats::jetstream::stream::{Config, DiscardPolicy, StorageType};

/// The name of the stream that holds `subject`, `None` when no stream does.
pub async fn stream_of(nats: &flowgate::JetStream, subject: &str) -> Option<String> {
    nats.context().stream_by_subject(subject).await.ok()
}

/// Deletes consumer `consumer` of stream `stream`, as an operator would
/// under a running subscriber.
///
/// Panics when the stream or the consumer does not exist or the server does
/// not answer.
pub async fn delete_consumer(nats: &flowgate::JetStream, stream: &str, consumer: &str) {
    let deleted = nats
        .context()
        .delete_consumer_from_stream(consumer, stream)
        .await
        .unwrap_or_else(|e| panic!("deleting consumer {consumer} of stream {stream}: {e}"));
    assert!(
        deleted.success,
        "the server did not delete consumer {consumer} of stream {stream}"
    );
}

/// Removes every message of stream `stream`.
///
/// Panics when the stream does not exist or the server does not answer.
pub async fn purge_stream(nats: &flowgate::JetStream, stream: &str) {
    let handle = nats
        .context()
        .get_stream(stream)
        .await
        .unwrap_or_else(|e| panic!("looking up stream {stream} to purge it: {e}"));
    handle
        .purge()
        .await
        .unwrap_or_else(|e| panic!("purging stream {stream}: {e}"));
}

/// Makes the stream that holds `subject` full, so that the next publish to
/// `subject` fails ("maximum messages exceeded"): a stream that stores at
/// most one message and discards new ones, holding one. Use it on a
/// dead-letter subject to make dead-lettering fail.
///
/// When no stream holds `subject`, a memory stream `full_<subject>` (dots
/// and wildcards as `_`) is created for it, so call this before anything
/// else creates one. When a stream already holds it, that stream is purged
/// and its limits changed (for all its subjects). Returns the stream's name.
///
/// Panics when the server refuses or does not answer.
pub async fn full_stream(nats: &flowgate::JetStream, subject: &str) -> String {
    let context = nats.context();
    let name = match stream_of(nats, subject).await {
        Some(name) => {
            purge_stream(nats, &name).await;
            let mut stream = context
                .get_stream(&name)
                .await
                .unwrap_or_else(|e| panic!("looking up stream {name}: {e}"));
            let mut config = stream
                .info()
                .await
                .unwrap_or_else(|e| panic!("stream {name} info: {e}"))
                .config
                .clone();
            config.max_messages = 1;
            config.discard = DiscardPolicy::New;
            context
                .update_stream(config)
                .await
                .unwrap_or_else(|e| panic!("limiting stream {name} to one message: {e}"));
            name
        }
        None => {
            let name = format!("full_{}", subject.replace(['.', '*', '>'], "_"));
            context
                .create_stream(Config {
                    name: name.clone(),
                    subjects: vec![subject.to_owned()],
                    max_messages: 1,
                    discard: DiscardPolicy::New,
                    storage: StorageType::Memory,
                    ..Config::default()
                })
                .await
                .unwrap_or_else(|e| panic!("creating the full stream {name} for {subject}: {e}"));
            name
        }
    };
    context
        .publish(subject.to_owned(), "filler".into())
        .await
        .unwrap_or_else(|e| panic!("publishing the filler of stream {name}: {e}"))
        .await
        .unwrap_or_else(|e| panic!("stream {name} did not store its filler: {e}"));
    name
}
