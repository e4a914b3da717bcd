//! What the broker says about a consumer and a stream.

/// The state of a JetStream consumer, as the server reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerState {
    /// Every stream sequence up to this one is acked (or terminated).
    pub ack_floor: u64,
    /// Messages delivered and not yet settled.
    pub num_ack_pending: usize,
    /// Messages pending an ack that were delivered more than once.
    pub num_redelivered: usize,
    /// Messages of the stream the consumer has not delivered yet.
    pub num_pending: u64,
    /// Deliveries so far (redeliveries included).
    pub delivered_consumer_sequence: u64,
    /// The highest stream sequence delivered.
    pub delivered_stream_sequence: u64,
    /// The consumer's `max_ack_pending`.
    pub max_ack_pending: i64,
}

/// The state of consumer `consumer` of the stream that holds `channel`, or
/// `None` when the stream or the consumer does not exist (or the server does
/// not answer).
pub async fn consumer_state(
    nats: &flowgate::JetStream,
    channel: &str,
    consumer: &str,
) -> Option<ConsumerState> {
    let context = nats.context();
    let stream_name = context.stream_by_subject(channel).await.ok()?;
    let stream = context.get_stream(stream_name).await.ok()?;
    let info = stream.consumer_info(consumer).await.ok()?;
    Some(ConsumerState {
        ack_floor: info.ack_floor.stream_sequence,
        num_ack_pending: info.num_ack_pending,
        num_redelivered: info.num_redelivered,
        num_pending: info.num_pending,
        delivered_consumer_sequence: info.delivered.consumer_sequence,
        delivered_stream_sequence: info.delivered.stream_sequence,
        max_ack_pending: info.config.max_ack_pending,
    })
}

/// How many messages the stream that holds `channel` stores, or `None` when
/// there is no such stream.
pub async fn stream_messages(nats: &flowgate::JetStream, channel: &str) -> Option<u64> {
    let context = nats.context();
    let stream_name = context.stream_by_subject(channel).await.ok()?;
    let mut stream = context.get_stream(stream_name).await.ok()?;
    Some(stream.info().await.ok()?.state.messages)
}

/// Every message stored on `subject` (a dead-letter subject, say), oldest
/// first; empty when no stream holds the subject.
pub async fn stored_messages(
    nats: &flowgate::JetStream,
    subject: &str,
) -> Vec<async_nats::jetstream::message::StreamMessage> {
    let context = nats.context();
    let Ok(stream_name) = context.stream_by_subject(subject).await else {
        return Vec::new();
    };
    let Ok(mut stream) = context.get_stream(stream_name).await else {
        return Vec::new();
    };
    let Ok(info) = stream.info().await else {
        return Vec::new();
    };
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let mut messages = Vec::new();
    for sequence in first..=last {
        if let Ok(message) = stream.get_raw_message(sequence).await {
            if message.subject.as_str() == subject {
                messages.push(message);
            }
        }
    }
    messages
}
