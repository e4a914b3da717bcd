//! A JetStream subscription: a pull consumer's message stream that reopens
//! itself after a missed heartbeat, a lost connection or a server restart,
//! and recreates a consumer the server lost without skipping messages.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use async_nats::jetstream::consumer::pull::MessagesError;
use async_nats::jetstream::{self, consumer::pull};
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};

use super::acker::AckRoute;
use super::outstanding::Outstanding;
use super::reopen::ReopenTrigger;
use super::{consumer, JetStreamAcker};
use crate::transport::{
    AckPendingFuture, AckPendingProbe, BacklogFuture, BacklogProbe, ConsumerBacklog,
    ConsumerProgress, DeliveryStream,
};
use crate::{AckMode, Delivery, Error, Metadata, SubscriptionSpec};

const REOPEN_BACKOFF_MIN: Duration = Duration::from_millis(50);
const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long one pull request lives on the server.
const PULL_EXPIRY: Duration = Duration::from_secs(30);
/// The idle heartbeat a pull request asks for: two missed ones and the pull
/// stream is reopened, so a stalled pull is noticed within seconds.
const PULL_HEARTBEAT: Duration = Duration::from_secs(5);
/// How long one attempt to rebind and pull again may take: during a leader
/// election the server's API does not answer, and a shorter wait retries
/// sooner than the client's request timeout would.
const REOPEN_TIMEOUT: Duration = Duration::from_secs(2);
/// The most messages one pull request asks for.
const MAX_BATCH: usize = 1000;
/// How long a pull that was told to reopen (a reconnect, a new consumer
/// leader) may still deliver before it is taken for dead: one that does is
/// alive (the client re-pulled on its own), and dropping it would leave what
/// it has in transit to come again only after the ack wait.
const REOPEN_GRACE: Duration = Duration::from_millis(250);

/// The deliveries of one JetStream subscriber. It never ends on its own: on
/// an error it logs, waits a little, rebinds the consumer and pulls again.
/// A consumer the server lost (an ephemeral past its inactivity threshold, a
/// durable someone deleted) is recreated from the lowest stream sequence this
/// subscription has not seen settled, so nothing below it is skipped.
pub struct JetStreamSubscription {
    pulling: Pulling,
    probe: AckPendingProbe,
    backlog: BacklogProbe,
    bound_at: ConsumerProgress,
}

/// Where the subscription's state is between deliveries.
enum Pulling {
    /// Here: a message the pull stream already holds is taken straight
    /// from it, with no future of its own.
    Ready(Box<State>),
    /// Inside the state's own async code, which waits for the next message
    /// (watching for reconnects and new leaders) or reopens the pull.
    Waiting(BoxFuture<'static, (Box<State>, Delivery<JetStreamAcker>)>),
    /// Stopped: nothing more is delivered.
    Stopped,
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
    /// What every delivery's acker shares.
    acks: Arc<AckRoute>,
    messages: Option<pull::Stream>,
    /// The consumer's name on the server (an ephemeral's changes when it is recreated).
    consumer: Arc<Mutex<String>>,
    /// What was delivered and not settled, for recreating a lost consumer.
    outstanding: Arc<Outstanding>,
    /// The last stream sequence seen, for recreating a lost consumer when
    /// nothing is outstanding.
    last_sequence: Option<u64>,
    backoff: Duration,
    /// Since when no pull stream runs, while reopening.
    interrupted: Option<Instant>,
    /// Reconnects and leader elections: the pull is reopened at once.
    trigger: ReopenTrigger,
}

impl JetStreamSubscription {
    pub(crate) async fn open(
        context: jetstream::Context,
        stream: String,
        spec: SubscriptionSpec,
    ) -> Result<Self, Error> {
        let consumer = Arc::<Mutex<String>>::default();
        let outstanding = Arc::new(Outstanding::new(consumer::max_ack_pending(&spec)));
        let trigger = ReopenTrigger::watch(context.client(), &stream, consumer.clone()).await;
        let acks = Arc::new(AckRoute::new(
            context.client(),
            Arc::from(spec.channel.as_str()),
            outstanding.clone(),
            spec.ack == AckMode::Coalesced,
        ));
        let mut state = State {
            context,
            stream,
            acks,
            spec,
            messages: None,
            consumer,
            outstanding,
            last_sequence: None,
            backoff: REOPEN_BACKOFF_MIN,
            interrupted: None,
            trigger,
        };
        // The first bind reports its errors (a mismatched durable, a refused
        // name) to the caller; later ones are retried.
        let (messages, bound_at) = state.pull(None).await?;
        state.messages = Some(messages);
        let info = ConsumerInfoReader {
            context: state.context.clone(),
            stream: state.stream.clone(),
            consumer: state.consumer.clone(),
        };
        let probe = info.clone().ack_pending_probe();
        let backlog = info.backlog_probe();
        Ok(Self {
            pulling: Pulling::Ready(Box::new(state)),
            probe,
            backlog,
            bound_at,
        })
    }
}

/// What the server says of the subscription's current consumer (its name
/// changes when an ephemeral one is recreated).
#[derive(Clone)]
struct ConsumerInfoReader {
    context: jetstream::Context,
    stream: String,
    consumer: Arc<Mutex<String>>,
}

impl ConsumerInfoReader {
    fn read(
        &self,
    ) -> impl std::future::Future<Output = Result<async_nats::jetstream::consumer::Info, Error>>
           + Send
           + 'static {
        let context = self.context.clone();
        let stream = self.stream.clone();
        let name = self
            .consumer
            .lock()
            .map(|name| name.clone())
            .unwrap_or_default();
        async move {
            context
                .get_stream_no_info(&stream)
                .await
                .map_err(|e| Error::Broker(Box::new(e)))?
                .consumer_info(&name)
                .await
                .map_err(|e| Error::Broker(Box::new(e)))
        }
    }

    /// Reads `num_ack_pending`.
    fn ack_pending_probe(self) -> AckPendingProbe {
        Arc::new(move || -> AckPendingFuture {
            let info = self.read();
            Box::pin(async move { Ok(info.await?.num_ack_pending) })
        })
    }

    /// Reads `num_pending` and `num_ack_pending`.
    fn backlog_probe(self) -> BacklogProbe {
        Arc::new(move || -> BacklogFuture {
            let info = self.read();
            Box::pin(async move {
                let info = info.await?;
                Ok(ConsumerBacklog {
                    pending: info.num_pending,
                    ack_pending: info.num_ack_pending as u64,
                })
            })
        })
    }
}

impl State {
    /// Binds the consumer and starts pulling. `resume_from` is set when
    /// reopening: where a consumer the server lost is recreated from.
    async fn pull(
        &self,
        resume_from: Option<u64>,
    ) -> Result<(pull::Stream, ConsumerProgress), Error> {
        let consumer = consumer::bind(&self.context, &self.stream, &self.spec, resume_from).await?;
        let info = consumer.cached_info();
        if let Ok(mut name) = self.consumer.lock() {
            name.clone_from(&info.name);
        }
        let bound_at = ConsumerProgress {
            last_delivery: info.delivered.consumer_sequence,
            unacked: info.num_ack_pending,
        };
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.spec.max_in_flight.clamp(1, MAX_BATCH))
            .expires(PULL_EXPIRY)
            .heartbeat(PULL_HEARTBEAT)
            .messages()
            .await
            .map_err(|e| Error::Subscribe {
                channel: self.spec.channel.clone(),
                source: Box::new(e),
            })?;
        Ok((messages, bound_at))
    }

    /// Where a lost consumer starts again: the lowest sequence delivered
    /// and not settled, else the one after the last seen.
    fn resume_from(&self) -> Option<u64> {
        self.outstanding
            .lowest()
            .or_else(|| self.last_sequence.map(|seq| seq + 1))
    }

    async fn next_delivery(&mut self) -> Delivery<JetStreamAcker> {
        loop {
            if self.messages.is_none() {
                self.reopen().await;
                continue;
            }
            let next = match self.next_message().await {
                Some(next) => next,
                None => continue,
            };
            if let Some(delivery) = self.accept(next) {
                return delivery;
            }
        }
    }

    /// What the pull stream gave: a delivery, or (a message without
    /// JetStream metadata, a failed or ended pull) nothing, having logged it
    /// and, for the pull, marked it to be reopened.
    fn accept(
        &mut self,
        next: Option<Result<jetstream::Message, MessagesError>>,
    ) -> Option<Delivery<JetStreamAcker>> {
        match next {
            Some(Ok(message)) => {
                let delivery = into_delivery(message, &self.acks);
                match &delivery {
                    Some(delivery) => {
                        let sequence = delivery.metadata.stream_sequence();
                        self.outstanding.delivered(sequence);
                        self.last_sequence = Some(sequence);
                    }
                    None => {
                        tracing::warn!(channel = %self.spec.channel, "skipped a message without JetStream metadata")
                    }
                }
                delivery
            }
            Some(Err(err)) => {
                tracing::warn!(channel = %self.spec.channel, error = %err, "pull stream failed; reopening");
                self.interrupt(Instant::now());
                None
            }
            None => {
                tracing::warn!(channel = %self.spec.channel, "pull stream ended; reopening");
                self.interrupt(Instant::now());
                None
            }
        }
    }

    /// The next delivery if the pull stream already holds one; `None` when
    /// it has to be waited for (or the pull reopened).
    fn ready_delivery(&mut self, cx: &mut Context<'_>) -> Option<Delivery<JetStreamAcker>> {
        loop {
            let next = match self.messages.as_mut()?.poll_next_unpin(cx) {
                Poll::Ready(next) => next,
                Poll::Pending => return None,
            };
            let ended = !matches!(next, Some(Ok(_)));
            if let Some(delivery) = self.accept(next) {
                return Some(delivery);
            }
            if ended {
                return None;
            }
        }
    }

    /// The pull stream's next item. What is there already is taken without
    /// waiting; while waiting, a reconnect or a new consumer leader drops a
    /// pull that stays quiet for [`REOPEN_GRACE`] after it (returns `None`).
    async fn next_message(&mut self) -> Option<Option<Result<jetstream::Message, MessagesError>>> {
        let messages = self.messages.as_mut()?;
        if let Some(next) = messages.next().now_or_never() {
            return Some(next);
        }
        let waiting_since = Instant::now();
        let cause = tokio::select! {
            biased;
            next = messages.next() => return Some(next),
            cause = self.trigger.fired() => cause,
        };
        match tokio::time::timeout(REOPEN_GRACE, messages.next()).await {
            Ok(next) => Some(next),
            Err(_) => {
                // The interruption counts from here: a quiet pull may have
                // waited for hours with nothing to deliver.
                let quiet_for = waiting_since.elapsed();
                tracing::info!(channel = %self.spec.channel, %cause, ?quiet_for, "reopening the pull");
                self.interrupt(Instant::now());
                None
            }
        }
    }

    /// Sends the latest acks and terminations again: sent while the
    /// consumer had no leader, they were lost, and the messages they settled
    /// would block the consumer's `max_ack_pending` until their ack wait.
    async fn settle_again(&self) {
        let client = self.context.client();
        for (reply, how) in self.outstanding.recent() {
            if let Err(err) = client
                .publish(reply, bytes::Bytes::from_static(how.payload()))
                .await
            {
                tracing::debug!(channel = %self.spec.channel, error = %err, "could not send a settlement again");
                return;
            }
        }
    }

    fn interrupt(&mut self, since: Instant) {
        self.messages = None;
        self.interrupted.get_or_insert(since);
    }

    /// One attempt to bind the consumer and pull again; after a failure it
    /// waits (ever longer), unless a reconnect or a new leader says to retry now.
    async fn reopen(&mut self) {
        let attempt = tokio::time::timeout(REOPEN_TIMEOUT, self.pull(self.resume_from()));
        let reopened = tokio::select! {
            reopened = attempt => reopened.unwrap_or_else(|_| {
                Err(Error::Subscribe {
                    channel: self.spec.channel.clone(),
                    source: format!("no answer within {REOPEN_TIMEOUT:?}").into(),
                })
            }),
            cause = self.trigger.fired() => {
                tracing::debug!(channel = %self.spec.channel, %cause, "reopening again at once");
                self.backoff = REOPEN_BACKOFF_MIN;
                return;
            }
        };
        match reopened {
            Ok((messages, _)) => {
                let interrupted = self.interrupted.take().map(|since| since.elapsed());
                tracing::info!(channel = %self.spec.channel, ?interrupted, "subscription reopened");
                self.messages = Some(messages);
                self.backoff = REOPEN_BACKOFF_MIN;
                self.settle_again().await;
            }
            Err(err) => {
                tracing::warn!(channel = %self.spec.channel, error = %err, retry_in = ?self.backoff, "cannot reopen subscription");
                let retry_now = tokio::select! {
                    () = tokio::time::sleep(self.backoff) => false,
                    _ = self.trigger.fired() => true,
                };
                self.backoff = if retry_now {
                    REOPEN_BACKOFF_MIN
                } else {
                    (self.backoff * 2).min(REOPEN_BACKOFF_MAX)
                };
            }
        }
    }
}

fn into_delivery(
    message: jetstream::Message,
    acks: &Arc<AckRoute>,
) -> Option<Delivery<JetStreamAcker>> {
    // The message's own acker (a copy of the whole JetStream context) is
    // dropped: the subscription's shared route settles it.
    let message = message.message;
    let reply = message.reply?;
    let info = ack_info(&reply)?;
    let acker = JetStreamAcker::new(acks.clone(), reply, info.stream_sequence);
    let metadata = Metadata::new(
        message.subject,
        info.stream_sequence,
        info.delivered,
        info.published,
        message.headers,
    )
    .with_consumer_sequence(info.consumer_sequence);
    Some(Delivery {
        payload: message.payload,
        metadata,
        acker,
    })
}

impl DeliveryStream<JetStreamAcker> for JetStreamSubscription {
    /// Takes what the pull stream buffered, then drops it: the client
    /// unsubscribes its pull inbox, so the server delivers nothing more here.
    fn stop(&mut self) -> Vec<Delivery<JetStreamAcker>> {
        let mut buffered = Vec::new();
        while let Some(Some(delivery)) = self.next().now_or_never() {
            buffered.push(delivery);
        }
        self.pulling = Pulling::Stopped;
        buffered
    }

    fn ack_pending_probe(&self) -> Option<AckPendingProbe> {
        Some(self.probe.clone())
    }

    fn bound_at(&self) -> Option<ConsumerProgress> {
        Some(self.bound_at)
    }

    fn backlog_probe(&self) -> Option<BacklogProbe> {
        Some(self.backlog.clone())
    }
}

impl Stream for JetStreamSubscription {
    type Item = Delivery<JetStreamAcker>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            self.pulling = match std::mem::replace(&mut self.pulling, Pulling::Stopped) {
                Pulling::Ready(mut state) => match state.ready_delivery(cx) {
                    Some(delivery) => {
                        self.pulling = Pulling::Ready(state);
                        return Poll::Ready(Some(delivery));
                    }
                    None => Pulling::Waiting(
                        async move {
                            let delivery = state.next_delivery().await;
                            (state, delivery)
                        }
                        .boxed(),
                    ),
                },
                Pulling::Waiting(mut waiting) => match waiting.poll_unpin(cx) {
                    Poll::Ready((state, delivery)) => {
                        self.pulling = Pulling::Ready(state);
                        return Poll::Ready(Some(delivery));
                    }
                    Poll::Pending => {
                        self.pulling = Pulling::Waiting(waiting);
                        return Poll::Pending;
                    }
                },
                Pulling::Stopped => return Poll::Pending,
            };
        }
    }
}

/// The stream sequence, delivery count and publish time from a JetStream ack
/// subject (`$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer
/// seq>.<time>.<pending>`, with domain and account hash in front on newer
/// servers), read straight from its tokens: cheaper than building the full
/// `jetstream::message::Info` for every message.
fn ack_info(reply: &str) -> Option<AckInfo> {
    let rest = reply.strip_prefix("$JS.ACK.")?.as_bytes();
    // The token count tells the format; the numbers are then read from the
    // end. (Measured: as costly as one forward pass noting every dot; most
    // of the cost is the digits.)
    let tokens = 1 + rest.iter().filter(|&&byte| byte == b'.').count();
    let mut numbers = match tokens {
        7 | 9 => rest,
        // A trailing random token on newer servers.
        10 => before_last_dot(rest)?.0,
        _ => return None,
    };
    let mut next_from_end = || {
        let (head, token) = before_last_dot(numbers)?;
        numbers = head;
        Some(token)
    };
    let _pending = next_from_end()?;
    let published = parse_decimal(next_from_end()?)?;
    let consumer_sequence = parse_decimal(next_from_end()?)?;
    let stream_sequence = parse_decimal(next_from_end()?)?;
    let delivered = parse_decimal(next_from_end()?)?;
    Some(AckInfo {
        stream_sequence,
        consumer_sequence,
        delivered: u32::try_from(delivered).unwrap_or(u32::MAX),
        published: SystemTime::UNIX_EPOCH + Duration::from_nanos(published),
    })
}

/// What comes before the last `.` of `tokens`, and the token after it.
fn before_last_dot(tokens: &[u8]) -> Option<(&[u8], &[u8])> {
    let dot = tokens.iter().rposition(|&byte| byte == b'.')?;
    Some((&tokens[..dot], &tokens[dot + 1..]))
}

/// A non-empty run of ASCII digits as a number, if it fits in a `u64`.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |value, &digit| {
        let digit = digit.checked_sub(b'0').filter(|d| *d <= 9)?;
        value.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// What an ack subject says about its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AckInfo {
    stream_sequence: u64,
    consumer_sequence: u64,
    delivered: u32,
    published: SystemTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_subjects_of_both_formats_are_read() {
        let old = "$JS.ACK.orders_placed.billing.2.42.57.1700000000123456789.9";
        let info = ack_info(old).expect("v1 ack subject");
        assert_eq!(
            (info.stream_sequence, info.consumer_sequence, info.delivered),
            (42, 57, 2)
        );
        assert_eq!(
            info.published,
            SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789)
        );
        let new = "$JS.ACK.hub.ACCHASH.orders_placed.billing.1.7.8.1700000000000000000.0.tok";
        assert_eq!(
            ack_info(new).map(|i| (i.stream_sequence, i.consumer_sequence, i.delivered)),
            Some((7, 8, 1))
        );
        assert_eq!(ack_info("_INBOX.abc"), None);
        assert_eq!(ack_info("$JS.ACK.too.short"), None);
        assert_eq!(ack_info("$JS.ACK.s.c.1.2.x.4.5"), None, "not a number");
        assert_eq!(ack_info("$JS.ACK.s.c.1..3.4.5"), None, "an empty token");
        assert_eq!(
            ack_info("$JS.ACK.s.c.1.18446744073709551616.3.4.5"),
            None,
            "past u64"
        );
        assert_eq!(
            ack_info("$JS.ACK.s.c.1.2.3.4.5.6.7.8.9"),
            None,
            "too many tokens"
        );
    }

    #[test]
    fn decimals_are_parsed_as_str_parse_would() {
        for text in ["0", "7", "42", "18446744073709551615", "007"] {
            assert_eq!(parse_decimal(text.as_bytes()), text.parse().ok(), "{text}");
        }
        for text in ["", "-1", "+1", "1a", " 1", "18446744073709551616"] {
            assert_eq!(parse_decimal(text.as_bytes()), None, "{text:?}");
        }
    }
}
