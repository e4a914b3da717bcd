//! A JetStream subscription: a pull consumer's message stream that reopens
//! itself after a missed heartbeat, a lost connection or a server restart.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, consumer::pull};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use super::{consumer, JetStreamAcker};
use crate::{AckMode, Delivery, Error, Metadata, SubscriptionSpec};

const REOPEN_BACKOFF_MIN: Duration = Duration::from_millis(50);
const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long a pull request of a coalesced-ack subscription lives.
const COALESCED_PULL_EXPIRY: Duration = Duration::from_secs(2);
/// The most messages one pull request asks for.
const MAX_BATCH: usize = 1000;

/// The deliveries of one JetStream subscriber. It never ends on its own: on
/// an error it logs, waits a little, rebinds the consumer and pulls again.
pub struct JetStreamSubscription {
    inner: BoxStream<'static, Delivery<JetStreamAcker>>,
    fence: Option<crate::transport::AckFence>,
}

impl JetStreamSubscription {
    /// The messages delivered to someone else and unacked when this
    /// subscription was made.
    pub(crate) fn fence(&self) -> Option<crate::transport::AckFence> {
        self.fence
    }
}

impl std::fmt::Debug for JetStreamSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamSubscription")
            .finish_non_exhaustive()
    }
}

struct State {
    context: jetstream::Context,
    stream: String,
    spec: SubscriptionSpec,
    messages: Option<pull::Stream>,
    /// The last stream sequence seen, so an ephemeral consumer recreated after
    /// a loss starts right after it.
    last_sequence: Option<u64>,
    backoff: Duration,
}

impl JetStreamSubscription {
    pub(crate) async fn open(
        context: jetstream::Context,
        stream: String,
        spec: SubscriptionSpec,
    ) -> Result<Self, Error> {
        let mut state = State {
            context,
            stream,
            spec,
            messages: None,
            last_sequence: None,
            backoff: REOPEN_BACKOFF_MIN,
        };
        // The first bind reports its errors (a mismatched durable, a refused
        // name) to the caller; later ones are retried.
        let (messages, info) = state.pull().await?;
        state.messages = Some(messages);
        let fence = (info.num_ack_pending > 0).then_some(crate::transport::AckFence {
            through: info.delivered.stream_sequence,
            unacked: info.num_ack_pending,
        });
        let inner = futures::stream::unfold(state, |mut state| async move {
            let delivery = state.next_delivery().await;
            Some((delivery, state))
        })
        .boxed();
        Ok(Self { inner, fence })
    }
}

impl State {
    async fn pull(&self) -> Result<(pull::Stream, async_nats::jetstream::consumer::Info), Error> {
        let resume_after = if consumer::consumer_name(&self.spec).is_none() {
            self.last_sequence
        } else {
            None
        };
        let consumer =
            consumer::bind(&self.context, &self.stream, &self.spec, resume_after).await?;
        let info = consumer.cached_info().clone();
        let mut pulls = consumer
            .stream()
            .max_messages_per_batch(self.spec.max_in_flight.clamp(1, MAX_BATCH));
        if self.spec.ack == AckMode::Coalesced {
            // A pull request that waits while the consumer is at its ack
            // pending limit is not always served again once an ack-all frees
            // room; short-lived requests bound such a stall to seconds.
            pulls = pulls
                .expires(COALESCED_PULL_EXPIRY)
                .heartbeat(COALESCED_PULL_EXPIRY / 4);
        }
        let messages = pulls.messages().await.map_err(|e| Error::Subscribe {
            channel: self.spec.channel.clone(),
            source: Box::new(e),
        })?;
        Ok((messages, info))
    }

    async fn next_delivery(&mut self) -> Delivery<JetStreamAcker> {
        loop {
            let Some(messages) = self.messages.as_mut() else {
                match self.pull().await {
                    Ok((messages, _)) => {
                        tracing::info!(channel = %self.spec.channel, "subscription reopened");
                        self.messages = Some(messages);
                        self.backoff = REOPEN_BACKOFF_MIN;
                    }
                    Err(err) => {
                        tracing::warn!(channel = %self.spec.channel, error = %err, retry_in = ?self.backoff, "cannot reopen subscription");
                        tokio::time::sleep(self.backoff).await;
                        self.backoff = (self.backoff * 2).min(REOPEN_BACKOFF_MAX);
                    }
                }
                continue;
            };
            match messages.next().await {
                Some(Ok(message)) => match into_delivery(message) {
                    Some(delivery) => {
                        self.last_sequence = Some(delivery.metadata.stream_sequence());
                        return delivery;
                    }
                    None => {
                        tracing::warn!(channel = %self.spec.channel, "skipped a message without JetStream metadata")
                    }
                },
                Some(Err(err)) => {
                    tracing::warn!(channel = %self.spec.channel, error = %err, "pull stream failed; reopening");
                    self.messages = None;
                }
                None => {
                    tracing::warn!(channel = %self.spec.channel, "pull stream ended; reopening");
                    self.messages = None;
                }
            }
        }
    }
}

fn into_delivery(message: jetstream::Message) -> Option<Delivery<JetStreamAcker>> {
    let (stream_sequence, delivered, published) = ack_info(message.reply.as_deref()?)?;
    let (message, acker) = message.split();
    let acker = JetStreamAcker::new(acker, message.subject.clone(), stream_sequence);
    let metadata = Metadata::new(
        message.subject,
        stream_sequence,
        delivered,
        published,
        message.headers,
    );
    Some(Delivery {
        payload: message.payload,
        metadata,
        acker,
    })
}

impl Stream for JetStreamSubscription {
    type Item = Delivery<JetStreamAcker>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

/// The stream sequence, delivery count and publish time from a JetStream ack
/// subject (`$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer
/// seq>.<time>.<pending>`, with domain and account hash in front on newer
/// servers), read straight from its tokens: cheaper than building the full
/// `jetstream::message::Info` for every message.
fn ack_info(reply: &str) -> Option<(u64, u32, SystemTime)> {
    let mut tokens = [""; 12];
    let mut len = 0;
    for token in reply.split('.') {
        *tokens.get_mut(len)? = token;
        len += 1;
    }
    if tokens[0] != "$JS" || tokens[1] != "ACK" {
        return None;
    }
    let base = match len {
        9 => 2,
        11 | 12 => 4,
        _ => return None,
    };
    let delivered: u64 = tokens[base + 2].parse().ok()?;
    let stream_sequence: u64 = tokens[base + 3].parse().ok()?;
    let nanos: u64 = tokens[base + 5].parse().ok()?;
    Some((
        stream_sequence,
        u32::try_from(delivered).unwrap_or(u32::MAX),
        SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_subjects_of_both_formats_are_read() {
        let old = "$JS.ACK.orders_placed.billing.2.42.57.1700000000123456789.9";
        let (seq, delivered, at) = ack_info(old).expect("v1 ack subject");
        assert_eq!((seq, delivered), (42, 2));
        assert_eq!(
            at,
            SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789)
        );
        let new = "$JS.ACK.hub.ACCHASH.orders_placed.billing.1.7.7.1700000000000000000.0.tok";
        assert_eq!(ack_info(new).map(|(s, d, _)| (s, d)), Some((7, 1)));
        assert_eq!(ack_info("_INBOX.abc"), None);
        assert_eq!(ack_info("$JS.ACK.too.short"), None);
    }
}
