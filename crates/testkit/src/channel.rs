//! A channel's storage: the in-memory counterpart of a JetStream stream.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use async_nats::Subject;
use bytes::Bytes;
use flowgate::{Headers, OutgoingMessage, PublishAck};

/// The header JetStream stores a message's de-duplication id under.
pub const MESSAGE_ID_HEADER: &str = "Nats-Msg-Id";

/// One message as the broker stored it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use flowgate::{OutgoingMessage, Transport};
///
/// let broker = flowgate_testkit::InMemory::new();
/// broker.publish(OutgoingMessage::new("orders.placed", "{}")).await.unwrap().await.unwrap();
/// let stored = &broker.channel_messages("orders.placed")[0];
/// assert_eq!(stored.sequence, 1);
/// assert_eq!(stored.subject, "orders.placed");
/// assert_eq!(&stored.payload[..], b"{}");
/// # }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoredMessage {
    /// Its sequence in the channel, from 1.
    pub sequence: u64,
    /// The subject it was published on: the channel, or a subject its
    /// wildcard pattern matches.
    pub subject: String,
    /// When the broker stored it. Strictly increasing within a channel.
    pub timestamp: SystemTime,
    /// Its headers; a message id is stored as `Nats-Msg-Id`, as JetStream does.
    pub headers: Option<Headers>,
    /// The de-duplication id it was published with.
    pub message_id: Option<String>,
    /// The raw payload.
    pub payload: Bytes,
    /// `subject`, shared with every delivery of the message and with the
    /// messages before it on the same subject: delivering copies nothing.
    pub(crate) shared_subject: Subject,
}

/// The name of the stream a channel is kept in, as JetStream names the
/// stream flowgate creates for it: see [`flowgate::stream_name`].
pub use flowgate::stream_name;

/// How long a message id de-duplicates, on tokio's clock: the duplicate
/// window of the streams flowgate creates on JetStream (its default, 2
/// minutes). A message published again with the same id later is stored
/// again, as JetStream stores it.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The number of ids kept at which the expired ones are dropped.
const PRUNE_IDS_AT: usize = 4096;

/// The stored messages of one channel and the ids it has seen: a stream
/// whose one subject is `name`, a concrete subject or a pattern.
#[derive(Debug)]
pub(crate) struct Channel {
    name: String,
    messages: Vec<StoredMessage>,
    /// Message id → the sequence of the message published with it, and
    /// when, for [`DUPLICATE_WINDOW`].
    ids: HashMap<String, (u64, Instant)>,
    /// The subject of the newest message, shared by the next ones on it.
    last_subject: Option<Subject>,
}

impl Channel {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            messages: Vec::new(),
            ids: HashMap::new(),
            last_subject: None,
        }
    }

    /// The subject (or pattern) the channel holds.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The sequence of the newest message; 0 when the channel is empty.
    pub(crate) fn last_sequence(&self) -> u64 {
        self.messages.len() as u64
    }

    /// The message at `sequence`, if the channel holds it.
    pub(crate) fn get(&self, sequence: u64) -> Option<&StoredMessage> {
        let index = usize::try_from(sequence.checked_sub(1)?).ok()?;
        self.messages.get(index)
    }

    pub(crate) fn messages(&self) -> &[StoredMessage] {
        &self.messages
    }

    /// Stores `message` unless its id was stored within the duplicate
    /// window; returns the receipt and whether a new message was stored.
    pub(crate) fn store(&mut self, message: OutgoingMessage) -> (PublishAck, bool) {
        let stream = stream_name(&self.name);
        let now = Instant::now();
        if let Some(id) = &message.message_id {
            if let Some(&(sequence, _)) = self
                .ids
                .get(id)
                .filter(|(_, at)| now.duration_since(*at) < DUPLICATE_WINDOW)
            {
                let ack = PublishAck {
                    stream,
                    sequence,
                    duplicate: true,
                };
                return (ack, false);
            }
        }
        let sequence = self.last_sequence() + 1;
        let mut headers = message.headers;
        if let Some(id) = &message.message_id {
            if self.ids.len() >= PRUNE_IDS_AT {
                self.ids
                    .retain(|_, (_, at)| now.duration_since(*at) < DUPLICATE_WINDOW);
            }
            self.ids.insert(id.clone(), (sequence, now));
            headers
                .get_or_insert_with(Headers::new)
                .insert(MESSAGE_ID_HEADER, id.as_str());
        }
        let shared_subject = self.share_subject(&message.subject);
        self.messages.push(StoredMessage {
            sequence,
            shared_subject,
            subject: message.subject,
            timestamp: self.next_timestamp(),
            headers,
            message_id: message.message_id,
            payload: message.payload,
        });
        let ack = PublishAck {
            stream,
            sequence,
            duplicate: false,
        };
        (ack, true)
    }

    /// `subject` as the newest message's when it is the same, else made
    /// once and kept for the next ones.
    fn share_subject(&mut self, subject: &str) -> Subject {
        match &self.last_subject {
            Some(last) if last.as_str() == subject => last.clone(),
            _ => {
                let shared = Subject::from(subject);
                self.last_subject = Some(shared.clone());
                shared
            }
        }
    }

    /// Now, or just after the newest message when the clock has not moved on,
    /// so start-by-time positions are exact.
    fn next_timestamp(&self) -> SystemTime {
        let now = SystemTime::now();
        match self.messages.last() {
            Some(last) if now <= last.timestamp => last.timestamp + Duration::from_nanos(1),
            _ => now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_id_deduplicates_within_the_window_only() {
        let mut channel = Channel::new("orders.placed");
        let publish = |channel: &mut Channel| {
            channel.store(OutgoingMessage::new("orders.placed", "a").with_message_id("x"))
        };
        assert!(publish(&mut channel).1);
        tokio::time::advance(DUPLICATE_WINDOW - Duration::from_millis(1)).await;
        let (ack, stored) = publish(&mut channel);
        assert!(!stored && ack.duplicate && ack.sequence == 1);
        tokio::time::advance(Duration::from_millis(1)).await;
        let (ack, stored) = publish(&mut channel);
        assert!(stored, "the window passed: stored again, as JetStream does");
        assert_eq!((ack.sequence, ack.duplicate), (2, false));
        let (ack, stored) = publish(&mut channel);
        assert!(!stored && ack.sequence == 2, "the window starts again");
    }

    #[test]
    fn sequences_start_at_one_and_ids_deduplicate() {
        let mut channel = Channel::new("orders.placed");
        let (first, stored) =
            channel.store(OutgoingMessage::new("orders.placed", "a").with_message_id("x"));
        assert!(stored);
        assert_eq!(first.sequence, 1);
        assert_eq!(first.stream, "orders_placed");
        let (again, stored) =
            channel.store(OutgoingMessage::new("orders.placed", "b").with_message_id("x"));
        assert!(!stored);
        assert_eq!(again.sequence, 1);
        assert!(again.duplicate);
        let (second, _) = channel.store(OutgoingMessage::new("orders.placed", "c"));
        assert_eq!(second.sequence, 2);
        assert_eq!(channel.last_sequence(), 2);
        assert_eq!(&channel.get(2).expect("stored").payload[..], b"c");
        assert!(channel.get(0).is_none());
        assert!(channel.get(3).is_none());
        let headers = channel.get(1).and_then(|m| m.headers.as_ref());
        assert_eq!(
            headers
                .and_then(|h| h.get(MESSAGE_ID_HEADER))
                .map(|v| v.as_str()),
            Some("x")
        );
        assert!(channel.messages()[0].timestamp < channel.messages()[1].timestamp);
    }

    #[test]
    fn messages_on_one_subject_share_it() {
        let mut channel = Channel::new("orders.placed");
        for payload in ["a", "b"] {
            channel.store(OutgoingMessage::new("orders.placed", payload));
        }
        channel.store(OutgoingMessage::new("orders.other", "c"));
        let shared = |sequence| {
            let message = channel.get(sequence).expect("stored");
            assert_eq!(message.shared_subject.as_str(), message.subject);
            message.shared_subject.as_str().as_ptr()
        };
        assert_eq!(shared(1), shared(2));
        assert_ne!(shared(2), shared(3));
    }
}
