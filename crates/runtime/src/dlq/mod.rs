//! Dead letters inspected, replayed and purged (JetStream): what an
//! operator does once a message has landed on `dlq.<channel>`.
//!
//! [`DeadLetters`] reads the stream that stores one dead-letter subject:
//! [`list`](DeadLetters::list) parses the `Flowgate-*` headers each dead
//! letter carries (original subject and sequence, durable, attempts, last
//! error, when it failed), [`replay`](DeadLetters::replay) sends chosen ones
//! back to their original subject (or another) once each, and
//! [`purge`](DeadLetters::purge) deletes them. The `flowgate` command-line
//! tool (crate `flowgate-cli`) is these operations behind `flowgate dlq`;
//! an admin endpoint can offer them the same way.
//!
//! ```no_run
//! use flowgate::dlq::{DeadLetters, ReplayOptions, Selection};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let nats = flowgate::JetStream::connect("nats://127.0.0.1:4222").await?;
//! let dead = DeadLetters::of_channel(&nats, "orders.placed").await?;
//! for letter in dead.list(&Selection::all()).await? {
//!     println!("{} {:?} {:?}", letter.sequence, letter.original_sequence, letter.last_error);
//! }
//! // The bug is fixed: send back every one the card processor refused.
//! let chosen = Selection::all().error_contains("card declined");
//! for entry in dead.replay(&chosen, &ReplayOptions::new()).await? {
//!     println!("{}: {:?}", entry.dead_letter.sequence, entry.outcome);
//! }
//! # Ok(()) }
//! ```

mod error;
mod record;
mod replay;
mod selection;

pub use error::DeadLetterError;
pub use record::DeadLetterRecord;
pub use replay::{ReplayEntry, ReplayOptions, ReplayOutcome, ReplayRecord, REPLAYS_BUCKET};
pub use selection::Selection;

use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};

use crate::transport::jetstream::covering::{self, Cover};
use crate::{DeadLetter, JetStream, Transport};

/// The dead letters on one subject, in the stream that stores it.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    nats: JetStream,
    subject: String,
    stream: String,
}

impl DeadLetters {
    /// The dead letters of subscribers of `channel` that keep the default
    /// dead-letter subject, `dlq.<channel>` (for a wildcard channel,
    /// `dlq.orders.*`, every `dlq.<subject>` in one stream).
    pub async fn of_channel(nats: &JetStream, channel: &str) -> Result<Self, DeadLetterError> {
        let subject = DeadLetter::PerChannel
            .subject_for(channel)
            .unwrap_or_else(|| format!("dlq.{channel}"));
        Self::on_subject(nats, subject).await
    }

    /// The dead letters on `subject`: a subscriber's own dead-letter
    /// subject (`dead_letter = "orders.failed"`), or a pattern.
    pub async fn on_subject(
        nats: &JetStream,
        subject: impl Into<String>,
    ) -> Result<Self, DeadLetterError> {
        let subject = subject.into();
        let stream = find_stream(nats, &subject).await?;
        Ok(Self {
            nats: nats.clone(),
            subject,
            stream,
        })
    }

    /// The dead-letter subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The stream that stores it.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The selected dead letters, oldest first, each with its replay record.
    pub async fn list(
        &self,
        selection: &Selection,
    ) -> Result<Vec<DeadLetterRecord>, DeadLetterError> {
        let mut records = self.scan(selection).await?;
        if let Some(bucket) = replay::open_existing(self.nats.context()).await {
            for record in &mut records {
                record.replayed = replay::recorded(&bucket, &self.stream, record.sequence).await?;
            }
        }
        Ok(records)
    }

    /// The dead letter at `sequence`.
    pub async fn get(&self, sequence: u64) -> Result<DeadLetterRecord, DeadLetterError> {
        self.list(&Selection::new().sequence(sequence))
            .await?
            .pop()
            .ok_or_else(|| DeadLetterError::NotFound {
                stream: self.stream.clone(),
                subject: self.subject.clone(),
                sequence,
            })
    }

    /// Replays the selected dead letters, oldest first: each is published
    /// to its original subject (or the one `options` names) with a
    /// [`REPLAY_OF`](crate::dead_letter::REPLAY_OF) header, and recorded
    /// once the broker stored it. A dead letter replayed before is refused
    /// unless forced. The first publish that fails stops the replay: its
    /// entry says why, the ones after it are not tried. The dead letters
    /// stay where they are ([`purge`](Self::purge) deletes them).
    pub async fn replay(
        &self,
        selection: &Selection,
        options: &ReplayOptions,
    ) -> Result<Vec<ReplayEntry>, DeadLetterError> {
        if selection.is_empty() {
            return Err(DeadLetterError::NothingSelected);
        }
        let chosen = self.list(selection).await?;
        // Opened (or created) with the first replay that publishes.
        let mut bucket = None;
        let mut entries = Vec::with_capacity(chosen.len());
        for dead_letter in chosen {
            let outcome = match refusal_or_target(&dead_letter, options) {
                Err(refused) => refused,
                Ok(to) if options.is_dry_run() => ReplayOutcome::WouldReplay { to },
                Ok(to) => {
                    let store = match &mut bucket {
                        Some(store) => store,
                        none => none
                            .insert(replay::open(self.nats.context(), self.nats.replicas()).await?),
                    };
                    self.replay_one(&dead_letter, to, store).await
                }
            };
            let failed = matches!(outcome, ReplayOutcome::Failed { .. });
            entries.push(ReplayEntry {
                dead_letter,
                outcome,
            });
            if failed {
                break;
            }
        }
        Ok(entries)
    }

    /// Publishes the replay of `dead_letter` to `to` and records it.
    async fn replay_one(
        &self,
        dead_letter: &DeadLetterRecord,
        to: String,
        bucket: &async_nats::jetstream::kv::Store,
    ) -> ReplayOutcome {
        let count = dead_letter
            .replayed
            .as_ref()
            .map_or(1, |before| before.count + 1);
        let message = replay::replay_message(dead_letter, to.clone(), count);
        let stored = match self.nats.publish(message).await {
            Ok(pending) => pending.await,
            Err(err) => Err(err),
        };
        let ack = match stored {
            Ok(ack) => ack,
            Err(err) => {
                return ReplayOutcome::Failed {
                    error: format!("publishing to `{to}`: {err}"),
                }
            }
        };
        let record = ReplayRecord {
            count,
            to: to.clone(),
            sequence: ack.sequence,
            at: crate::dead_letter::rfc3339(std::time::SystemTime::now()),
        };
        if let Err(err) = replay::record(bucket, dead_letter, &record).await {
            return ReplayOutcome::Failed {
                error: format!(
                    "replayed to `{to}` (sequence {}), but not recorded, so it is not refused next time: {err}",
                    ack.sequence
                ),
            };
        }
        tracing::info!(
            dead_letter = %dead_letter.id(),
            to = %to,
            sequence = ack.sequence,
            "dead letter replayed"
        );
        ReplayOutcome::Replayed {
            to,
            sequence: ack.sequence,
        }
    }

    /// Deletes the selected dead letters from their stream (with their
    /// replay records) and returns them; with `dry_run`, only returns them.
    pub async fn purge(
        &self,
        selection: &Selection,
        dry_run: bool,
    ) -> Result<Vec<DeadLetterRecord>, DeadLetterError> {
        if selection.is_empty() {
            return Err(DeadLetterError::NothingSelected);
        }
        let chosen = self.list(selection).await?;
        if dry_run || chosen.is_empty() {
            return Ok(chosen);
        }
        let stream = self.open_stream().await?;
        let replays = replay::open_existing(self.nats.context()).await;
        for record in &chosen {
            stream.delete_message(record.sequence).await.map_err(|e| {
                DeadLetterError::broker(
                    format!(
                        "deleting sequence {} from stream `{}`",
                        record.sequence, self.stream
                    ),
                    e,
                )
            })?;
            if let (Some(bucket), Some(_)) = (&replays, &record.replayed) {
                let key = replay::key(&self.stream, record.sequence);
                bucket.delete(key.as_str()).await.map_err(|e| {
                    DeadLetterError::broker(
                        format!("deleting `{key}` from bucket `{REPLAYS_BUCKET}`"),
                        e,
                    )
                })?;
            }
        }
        tracing::info!(stream = %self.stream, purged = chosen.len(), "dead letters purged");
        Ok(chosen)
    }

    /// The dead letters on the subject that `selection` may select, oldest
    /// first, read one by one from the stream's leader.
    async fn scan(&self, selection: &Selection) -> Result<Vec<DeadLetterRecord>, DeadLetterError> {
        let stream = self.open_stream().await?;
        let (mut next, last) = selection.bounds();
        let mut records = Vec::new();
        while next <= last {
            let stored = match stream
                .get_first_raw_message_by_subject(&self.subject, next)
                .await
            {
                Ok(stored) => stored,
                Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => break,
                Err(err) => {
                    return Err(DeadLetterError::broker(
                        format!("reading stream `{}` from sequence {next}", self.stream),
                        err,
                    ))
                }
            };
            if stored.sequence > last {
                break;
            }
            next = stored.sequence.saturating_add(1);
            if !selection.covers(stored.sequence) {
                continue;
            }
            let record = DeadLetterRecord::from_stored(&self.stream, stored);
            if selection.matches(&record) {
                records.push(record);
            }
        }
        Ok(records)
    }

    async fn open_stream(&self) -> Result<Stream<()>, DeadLetterError> {
        self.nats
            .context()
            .get_stream_no_info(&self.stream)
            .await
            .map_err(|e| DeadLetterError::broker(format!("opening stream `{}`", self.stream), e))
    }
}

/// Where `dead_letter` is replayed to, or why it is not.
fn refusal_or_target(
    dead_letter: &DeadLetterRecord,
    options: &ReplayOptions,
) -> Result<String, ReplayOutcome> {
    let to = options
        .target(dead_letter)
        .ok_or(ReplayOutcome::NoSubject)?;
    match (&dead_letter.replayed, options.is_forced()) {
        (Some(before), false) => Err(ReplayOutcome::AlreadyReplayed(before.clone())),
        _ => Ok(to),
    }
}

/// The one stream that stores `subject`.
async fn find_stream(nats: &JetStream, subject: &str) -> Result<String, DeadLetterError> {
    let found = covering::holding(nats.context(), subject)
        .await
        .map_err(|e| DeadLetterError::broker(format!("finding the stream of `{subject}`"), e))?;
    match found {
        Cover::Whole(name) => Ok(name),
        Cover::None => Err(DeadLetterError::NoStream {
            subject: subject.to_owned(),
        }),
        Cover::Part(streams) => Err(DeadLetterError::SeveralStreams {
            subject: subject.to_owned(),
            example: streams
                .first()
                .and_then(|(_, subjects)| subjects.first().cloned())
                .unwrap_or_default(),
            streams: streams
                .iter()
                .map(|(name, _)| name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}
