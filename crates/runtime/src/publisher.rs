//! Publishing typed events: one at a time awaiting each ack, or through a
//! bounded window of outstanding acks.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};

use crate::error::Unstored;
use crate::middleware::metrics::record_publish;
use crate::{Event, Headers, OutgoingMessage, PublishAck, PublishError, Transport};

/// Per-publish options: a channel other than the type's, a de-duplication id,
/// headers.
///
/// ```
/// let options = flowgate::PublishOptions::new().message_id("order-7");
/// ```
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    channel: Option<String>,
    message_id: Option<String>,
    headers: Option<Headers>,
}

impl PublishOptions {
    /// No options: the type's channel, no id, no headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes on `channel` instead of the channel the type declares.
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = Some(channel.into());
        self
    }

    /// Sets the id the broker uses to drop duplicates (`Nats-Msg-Id`).
    pub fn message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }

    /// Sends headers along.
    pub fn headers(mut self, headers: Headers) -> Self {
        self.headers = Some(headers);
        self
    }
}

/// Publishes typed events on a transport.
///
/// ```
/// # #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
/// # #[event(channel = "orders.placed")]
/// # struct OrderPlaced { id: u64 }
/// # async fn demo<T: flowgate::Transport>(transport: T) -> Result<(), flowgate::PublishError> {
/// let publisher = flowgate::Publisher::new(transport);
/// // Await the broker's ack of each event...
/// let ack = publisher.publish(&OrderPlaced { id: 1 }).await?;
/// // ...or keep up to 256 acks outstanding.
/// let mut window = publisher.window(256);
/// for id in 2..1000 {
///     window.publish(&OrderPlaced { id }).await?;
/// }
/// window.flush().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Publisher<T> {
    transport: T,
}

impl<T: Transport> Publisher<T> {
    /// A publisher on `transport`.
    pub fn new(transport: T) -> Self {
        Self { transport }
    }

    /// Publishes `event` on its type's channel and waits for the broker's ack.
    pub async fn publish<E: Event>(&self, event: &E) -> Result<PublishAck, PublishError> {
        self.publish_with(event, PublishOptions::new()).await
    }

    /// Publishes `event` with `options` and waits for the broker's ack.
    pub async fn publish_with<E: Event>(
        &self,
        event: &E,
        options: PublishOptions,
    ) -> Result<PublishAck, PublishError> {
        let channel = channel_label::<E>(&options);
        let message = outgoing(event, options, None)?;
        let stored = match self.transport.publish(message).await {
            Ok(ack) => ack.await,
            Err(err) => Err(err),
        };
        record_publish(&channel, stored.is_ok());
        stored
    }

    /// Publishes `event` on the concrete `subject` and waits for the
    /// broker's ack: the way to publish a type whose channel is a wildcard
    /// pattern. When the type declares a channel, `subject` must be one it
    /// matches ([`PublishError::SubjectMismatch`] otherwise).
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
    /// #[event(channel = "orders.*")]
    /// struct OrderEvent {
    ///     id: u64,
    /// }
    ///
    /// # async fn demo<T: flowgate::Transport>(transport: T) {
    /// let publisher = flowgate::Publisher::new(transport);
    /// publisher.publish_to("orders.paid", &OrderEvent { id: 1 }).await.unwrap();
    /// // The pattern is not a subject, and `shipments.sent` is not one it matches:
    /// let err = publisher.publish(&OrderEvent { id: 2 }).await.unwrap_err();
    /// assert!(err.to_string().contains("publish_to"));
    /// let err = publisher.publish_to("shipments.sent", &OrderEvent { id: 3 }).await.unwrap_err();
    /// assert!(matches!(err, flowgate::PublishError::SubjectMismatch { .. }));
    /// # }
    /// ```
    pub async fn publish_to<E: Event>(
        &self,
        subject: &str,
        event: &E,
    ) -> Result<PublishAck, PublishError> {
        check_subject::<E>(subject)?;
        let options = PublishOptions::new().channel(subject);
        self.publish_with(event, options).await
    }

    /// A window that keeps at most `size` acks outstanding.
    pub fn window(&self, size: usize) -> PublishWindow<T> {
        PublishWindow {
            transport: self.transport.clone(),
            size: size.max(1),
            pending: VecDeque::new(),
            next_number: 0,
            checked: CheckedChannel::default(),
        }
    }

    /// The transport underneath.
    pub fn transport(&self) -> &T {
        &self.transport
    }
}

/// The `channel` label of a publish of `E`: the type's channel (its
/// pattern, for a wildcard type, so the label takes no value per subject),
/// else the channel the options name.
pub(crate) fn channel_label<E: Event>(options: &PublishOptions) -> metrics::SharedString {
    match (E::CHANNEL, &options.channel) {
        (Some(channel), _) => metrics::SharedString::const_str(channel),
        (None, Some(channel)) => metrics::SharedString::from_owned(channel.clone()),
        (None, None) => metrics::SharedString::const_str(""),
    }
}

pub(crate) fn outgoing<E: Event>(
    event: &E,
    options: PublishOptions,
    checked: Option<&mut CheckedChannel>,
) -> Result<OutgoingMessage, PublishError> {
    let channel = match options.channel {
        Some(channel) => {
            match checked {
                Some(checked) => checked.check(&channel)?,
                None => crate::validate_channel(&channel)?,
            }
            channel
        }
        // `#[derive(Event)]` checked the type's channel at compile time.
        None => match E::CHANNEL {
            None => {
                return Err(PublishError::NoChannel {
                    type_name: std::any::type_name::<E>(),
                })
            }
            Some(channel) if crate::is_pattern(channel) => {
                return Err(PublishError::WildcardChannel {
                    type_name: std::any::type_name::<E>(),
                    channel,
                })
            }
            Some(channel) => channel.to_owned(),
        },
    };
    let mut headers = options.headers;
    crate::trace_context::inject(&mut headers);
    Ok(OutgoingMessage {
        subject: channel,
        payload: event.encode()?,
        headers,
        message_id: options.message_id,
    })
}

/// Checks that `subject` is concrete and one `E`'s channel matches.
pub(crate) fn check_subject<E: Event>(subject: &str) -> Result<(), PublishError> {
    crate::validate_channel(subject)?;
    match E::CHANNEL {
        Some(channel) if !crate::subject_matches(channel, subject) => {
            Err(PublishError::SubjectMismatch {
                type_name: std::any::type_name::<E>(),
                channel,
                subject: subject.to_owned(),
            })
        }
        _ => Ok(()),
    }
}

/// The channel option a window published with last, already checked:
/// publishing to it again compares it instead of checking it anew.
#[derive(Debug, Default)]
pub(crate) struct CheckedChannel(Option<String>);

impl CheckedChannel {
    fn check(&mut self, channel: &str) -> Result<(), crate::NameError> {
        if self.0.as_deref() == Some(channel) {
            return Ok(());
        }
        crate::validate_channel(channel)?;
        let last = self.0.get_or_insert_with(String::new);
        last.clear();
        last.push_str(channel);
        Ok(())
    }
}

/// Publishes with at most `size` broker acks outstanding, like the NATS
/// Streaming client's async publish: when the window is full, the next
/// publish first waits for the oldest ack.
///
/// Every event handed to the window is either stored by the broker or
/// reported back as [`PublishError::NotStored`], with the window's number
/// for it (what [`publish`](Self::publish) returned), its payload and
/// message id, so it can be published again. The wait for each ack starts
/// when its event is sent, not when it becomes the oldest: after a
/// connection loss the outstanding acks time out at once, not one after
/// another.
#[derive(Debug)]
pub struct PublishWindow<T: Transport> {
    transport: T,
    size: usize,
    /// Oldest first. Each ack was polled once when its event was sent, so
    /// its own timeout runs from then, not from when it reaches the front.
    pending: VecDeque<Outstanding<T::PendingAck>>,
    next_number: u64,
    checked: CheckedChannel,
}

/// One publish of a window: its ack still to come, or its outcome when the
/// ack came before the publishes sent ahead of it were settled.
#[derive(Debug)]
enum Outstanding<F> {
    Waiting(Tracked<F>),
    Settled(Result<(), Unstored>),
}

/// One outstanding publish of a window: its ack, and what identifies it.
#[derive(Debug)]
struct Tracked<F> {
    ack: F,
    number: u64,
    /// The `channel` label its outcome is counted under.
    channel: metrics::SharedString,
    payload: bytes::Bytes,
    message_id: Option<String>,
}

impl<F> Tracked<F>
where
    F: Future<Output = Result<PublishAck, PublishError>> + Unpin,
{
    fn poll_ack(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Unstored>> {
        Pin::new(&mut self.ack).poll(cx).map(|result| {
            record_publish(&self.channel, result.is_ok());
            result.map(|_| ()).map_err(|error| Unstored {
                number: self.number,
                payload: std::mem::take(&mut self.payload),
                message_id: self.message_id.take(),
                error: Box::new(error),
            })
        })
    }

    /// Polls the ack once, without a waker: a transport's ack timeout
    /// starts on the first poll. The window polls it again, with its own
    /// waker, once it is the oldest.
    fn start(mut self) -> Outstanding<F> {
        match self.poll_ack(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(outcome) => Outstanding::Settled(outcome),
            Poll::Pending => Outstanding::Waiting(self),
        }
    }
}

impl<T: Transport> PublishWindow<T> {
    /// Publishes `event` on its type's channel once the window has room, and
    /// returns the window's number for it (0, 1, 2, ...).
    ///
    /// An `Err` is either this event's own failure (nothing sent) or
    /// [`PublishError::NotStored`] naming earlier events whose acks failed;
    /// in that case this event was sent and is outstanding.
    pub async fn publish<E: Event>(&mut self, event: &E) -> Result<u64, PublishError> {
        self.publish_with(event, PublishOptions::new()).await
    }

    /// Publishes `event` with `options` once the window has room; see
    /// [`publish`](Self::publish).
    pub async fn publish_with<E: Event>(
        &mut self,
        event: &E,
        options: PublishOptions,
    ) -> Result<u64, PublishError> {
        let channel = channel_label::<E>(&options);
        let message = outgoing(event, options, Some(&mut self.checked))?;
        let mut failures = Vec::new();
        while self.pending.len() >= self.size {
            if let Some(Err(unstored)) = self.oldest().await {
                failures.push(unstored);
            }
        }
        let number = self.next_number;
        self.next_number += 1;
        let payload = message.payload.clone();
        let message_id = message.message_id.clone();
        match self.transport.publish(message).await {
            Ok(ack) => self.pending.push_back(
                Tracked {
                    ack,
                    number,
                    channel,
                    payload,
                    message_id,
                }
                .start(),
            ),
            Err(error) => {
                record_publish(&channel, false);
                failures.push(Unstored {
                    number,
                    payload,
                    message_id,
                    error: Box::new(error),
                });
            }
        }
        if failures.is_empty() {
            Ok(number)
        } else {
            Err(PublishError::NotStored { failures })
        }
    }

    /// Publishes `event` on the concrete `subject` once the window has
    /// room; the subject is checked as in [`Publisher::publish_to`], and the
    /// result is as in [`publish`](Self::publish).
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
    /// #[event(channel = "orders.>")]
    /// struct OrderEvent {
    ///     id: u64,
    /// }
    ///
    /// # async fn demo<T: flowgate::Transport>(transport: T) -> Result<(), flowgate::PublishError> {
    /// let mut window = flowgate::Publisher::new(transport).window(16);
    /// window.publish_to("orders.eu.placed", &OrderEvent { id: 1 }).await?;
    /// window.publish_to("orders.us.placed", &OrderEvent { id: 2 }).await?;
    /// window.flush().await
    /// # }
    /// ```
    pub async fn publish_to<E: Event>(
        &mut self,
        subject: &str,
        event: &E,
    ) -> Result<u64, PublishError> {
        if self.checked.0.as_deref() != Some(subject) {
            check_subject::<E>(subject)?;
        }
        let options = PublishOptions::new().channel(subject);
        self.publish_with(event, options).await
    }

    /// Acks still outstanding.
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    /// The outcome of the oldest publish, once its ack came; `None` when
    /// none is outstanding.
    fn oldest(&mut self) -> impl Future<Output = Option<Result<(), Unstored>>> + '_ {
        std::future::poll_fn(|cx| {
            let outcome = match self.pending.front_mut() {
                None => return Poll::Ready(None),
                Some(Outstanding::Waiting(tracked)) => ready!(tracked.poll_ack(cx)),
                // Taken, and its entry popped right below.
                Some(Outstanding::Settled(outcome)) => std::mem::replace(outcome, Ok(())),
            };
            self.pending.pop_front();
            Poll::Ready(Some(outcome))
        })
    }

    /// Waits for every outstanding ack; every event not stored is reported
    /// in [`PublishError::NotStored`].
    pub async fn flush(&mut self) -> Result<(), PublishError> {
        let mut failures = Vec::new();
        while let Some(result) = self.oldest().await {
            if let Err(unstored) = result {
                failures.push(unstored);
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(PublishError::NotStored { failures })
        }
    }
}
