//! Sending dead letters back: to their original subject or another, once
//! each unless forced, recorded in the bucket [`REPLAYS_BUCKET`].
//!
//! A replay publishes the dead letter's payload with a header naming it
//! ([`REPLAY_OF`]), its trace context, and a message id made of its stream,
//! its sequence and the replay's number: two operators replaying the same
//! dead letter at once store it once (the broker drops the copy within the
//! stream's duplicate window). Once the broker has stored it, the replay is
//! recorded under `<stream>.<sequence>`; a later replay of that dead letter
//! is refused unless forced. The replayed message is a new message in its
//! stream: its attempts start a fresh failure budget.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};

use super::{DeadLetterError, DeadLetterRecord};
use crate::dead_letter::REPLAY_OF;
use crate::transport::jetstream::bucket::{key_token, Bucket};
use crate::{Headers, OutgoingMessage};

/// The key-value bucket that records which dead letters were replayed,
/// under `<dead-letter stream>.<sequence>` (`dlq_orders_placed.7`).
///
/// `nats kv get flowgate_replays dlq_orders_placed.7` shows one record;
/// `nats kv del flowgate_replays dlq_orders_placed.7` lets it be replayed
/// again without forcing.
pub const REPLAYS_BUCKET: &str = "flowgate_replays";

/// Where a dead letter went when it was replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReplayRecord {
    /// How many times it was replayed.
    pub count: u32,
    /// The subject of the last replay.
    pub to: String,
    /// The replayed message's sequence in its stream.
    pub sequence: u64,
    /// When (RFC 3339, UTC).
    pub at: String,
}

/// How to replay.
///
/// ```
/// use flowgate::dlq::ReplayOptions;
///
/// let options = ReplayOptions::new().to("orders.placed.v2").dry_run();
/// ```
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    to: Option<String>,
    dry_run: bool,
    force: bool,
}

impl ReplayOptions {
    /// Each to its original subject, once.
    pub fn new() -> Self {
        Self::default()
    }

    /// To `subject` instead of the original one.
    pub fn to(mut self, subject: impl Into<String>) -> Self {
        self.to = Some(subject.into());
        self
    }

    /// Says what would be replayed, and publishes nothing.
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    /// Replays dead letters that were replayed before, too.
    pub fn force(mut self) -> Self {
        self.force = true;
        self
    }

    pub(crate) fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    pub(crate) fn is_forced(&self) -> bool {
        self.force
    }

    /// The subject `record` is replayed to, if it has one.
    pub(crate) fn target(&self, record: &DeadLetterRecord) -> Option<String> {
        self.to.clone().or_else(|| record.original_subject.clone())
    }
}

/// What a replay did with one dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplayOutcome {
    /// Stored on `to` at `sequence`.
    Replayed {
        /// The subject replayed to.
        to: String,
        /// The replayed message's sequence in its stream.
        sequence: u64,
    },
    /// A dry run: it would go to `to`.
    WouldReplay {
        /// The subject it would be replayed to.
        to: String,
    },
    /// Refused: replayed before (force to replay it again).
    AlreadyReplayed(ReplayRecord),
    /// Refused: it names no original subject and no other was given.
    NoSubject,
    /// The publish or its record failed; the replay stopped here.
    Failed {
        /// What went wrong.
        error: String,
    },
}

/// One dead letter a replay chose, and what became of it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReplayEntry {
    /// The dead letter.
    pub dead_letter: DeadLetterRecord,
    /// What the replay did with it.
    pub outcome: ReplayOutcome,
}

/// The bucket, with the settings it is created with.
fn bucket(replicas: usize) -> Bucket {
    Bucket {
        name: REPLAYS_BUCKET,
        description: "flowgate: dead letters replayed, by <dead-letter stream>.<sequence>",
        max_age: Duration::ZERO,
        replicas,
    }
}

/// The bucket's key of one dead letter.
pub(crate) fn key(stream: &str, sequence: u64) -> String {
    format!("{}.{sequence}", key_token(stream))
}

/// Opens the bucket for reading: `None` when it does not exist (nothing was
/// replayed yet).
pub(crate) async fn open_existing(context: &jetstream::Context) -> Option<kv::Store> {
    context.get_key_value(REPLAYS_BUCKET).await.ok()
}

/// Opens the bucket, creating it on the first replay.
pub(crate) async fn open(
    context: &jetstream::Context,
    replicas: usize,
) -> Result<kv::Store, DeadLetterError> {
    bucket(replicas)
        .open_or_create(context)
        .await
        .map(|(store, _)| store)
        .map_err(|source| {
            DeadLetterError::broker(
                format!("opening or creating the key-value bucket `{REPLAYS_BUCKET}` that records replays (this user needs to create stream `KV_{REPLAYS_BUCKET}` and publish to `$KV.{REPLAYS_BUCKET}.>`)"),
                source,
            )
        })
}

/// The replay record of `record`, if it was replayed.
pub(crate) async fn recorded(
    bucket: &kv::Store,
    stream: &str,
    sequence: u64,
) -> Result<Option<ReplayRecord>, DeadLetterError> {
    let key = key(stream, sequence);
    let value = bucket.get(key.as_str()).await.map_err(|e| {
        DeadLetterError::broker(format!("reading `{key}` in bucket `{REPLAYS_BUCKET}`"), e)
    })?;
    Ok(value.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// Writes the record of a replay that the broker stored.
pub(crate) async fn record(
    bucket: &kv::Store,
    dead_letter: &DeadLetterRecord,
    replay: &ReplayRecord,
) -> Result<(), DeadLetterError> {
    let key = key(&dead_letter.stream, dead_letter.sequence);
    let value = serde_json::to_vec(replay)
        .map_err(|e| DeadLetterError::broker("encoding a replay record", e))?;
    bucket
        .put(key.as_str(), value.into())
        .await
        .map(|_| ())
        .map_err(|e| {
            DeadLetterError::broker(format!("writing `{key}` in bucket `{REPLAYS_BUCKET}`"), e)
        })
}

/// The message a replay publishes: the payload, the trace context, the
/// header naming the dead letter, and an id unique to this replay.
pub(crate) fn replay_message(record: &DeadLetterRecord, to: String, count: u32) -> OutgoingMessage {
    let mut headers = Headers::new();
    crate::trace_context::copy(&record.headers, &mut headers);
    headers.insert(REPLAY_OF, record.id().as_str());
    let id = match count {
        1 => format!("flowgate-replay-{}-{}", record.stream, record.sequence),
        n => format!("flowgate-replay-{}-{}-{n}", record.stream, record.sequence),
    };
    OutgoingMessage::new(to, record.payload.clone())
        .with_headers(headers)
        .with_message_id(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace_context::TRACEPARENT;

    fn dead_letter() -> DeadLetterRecord {
        let mut headers = Headers::new();
        headers.insert(
            TRACEPARENT,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        headers.insert(crate::dead_letter::LAST_ERROR, "declined");
        DeadLetterRecord {
            stream: "dlq_orders_placed".into(),
            sequence: 7,
            subject: "dlq.orders.placed".into(),
            stored_at: std::time::SystemTime::UNIX_EPOCH,
            original_subject: Some("orders.placed".into()),
            original_sequence: Some(42),
            durable: Some("billing".into()),
            attempts: Some(3),
            last_error: Some("declined".into()),
            failed_at: None,
            headers,
            payload: bytes::Bytes::from_static(b"{}"),
            replayed: None,
        }
    }

    #[test]
    fn a_replay_names_its_dead_letter_keeps_the_trace_and_drops_the_failure_headers() {
        let message = replay_message(&dead_letter(), "orders.placed".into(), 1);
        let headers = message.headers.expect("headers");
        assert_eq!(
            headers.get(REPLAY_OF).map(|v| v.as_str()),
            Some("dlq_orders_placed/7")
        );
        assert!(headers.get(TRACEPARENT).is_some());
        assert!(headers.get(crate::dead_letter::LAST_ERROR).is_none());
        assert_eq!(
            message.message_id.as_deref(),
            Some("flowgate-replay-dlq_orders_placed-7")
        );
    }

    #[test]
    fn a_forced_replay_is_not_dropped_as_a_duplicate_of_the_first() {
        let first = replay_message(&dead_letter(), "orders.placed".into(), 1);
        let second = replay_message(&dead_letter(), "orders.placed".into(), 2);
        assert_ne!(first.message_id, second.message_id);
    }

    #[test]
    fn the_target_is_the_original_subject_unless_another_is_given() {
        let record = dead_letter();
        assert_eq!(
            ReplayOptions::new().target(&record).as_deref(),
            Some("orders.placed")
        );
        assert_eq!(
            ReplayOptions::new().to("x.y").target(&record).as_deref(),
            Some("x.y")
        );
        assert_eq!(key("dlq.odd", 3), "dlq=2Eodd.3");
    }
}
