//! Publishing typed events: one at a time awaiting each ack, or through a
//! bounded window of outstanding acks.

use std::collections::VecDeque;

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
        let message = outgoing(event, options)?;
        self.transport.publish(message).await?.await
    }

    /// A window that keeps at most `size` acks outstanding.
    pub fn window(&self, size: usize) -> PublishWindow<T> {
        PublishWindow {
            transport: self.transport.clone(),
            size: size.max(1),
            pending: VecDeque::with_capacity(size.max(1)),
        }
    }

    /// The transport underneath.
    pub fn transport(&self) -> &T {
        &self.transport
    }
}

fn outgoing<E: Event>(event: &E, options: PublishOptions) -> Result<OutgoingMessage, PublishError> {
    let channel = match options.channel {
        Some(channel) => {
            crate::validate_channel(&channel)?;
            channel
        }
        // `#[derive(Event)]` checked the type's channel at compile time.
        None => E::CHANNEL
            .ok_or(PublishError::NoChannel {
                type_name: std::any::type_name::<E>(),
            })?
            .to_owned(),
    };
    Ok(OutgoingMessage {
        subject: channel,
        payload: event.encode()?,
        headers: options.headers,
        message_id: options.message_id,
    })
}

/// Publishes with at most `size` broker acks outstanding, like the NATS
/// Streaming client's async publish: when the window is full, the next
/// publish first waits for the oldest ack.
#[derive(Debug)]
pub struct PublishWindow<T: Transport> {
    transport: T,
    size: usize,
    pending: VecDeque<T::PendingAck>,
}

impl<T: Transport> PublishWindow<T> {
    /// Publishes `event` on its type's channel once the window has room.
    /// An error is the first failed ack (or this publish's own failure).
    pub async fn publish<E: Event>(&mut self, event: &E) -> Result<(), PublishError> {
        self.publish_with(event, PublishOptions::new()).await
    }

    /// Publishes `event` with `options` once the window has room.
    pub async fn publish_with<E: Event>(
        &mut self,
        event: &E,
        options: PublishOptions,
    ) -> Result<(), PublishError> {
        let message = outgoing(event, options)?;
        while self.pending.len() >= self.size {
            if let Some(oldest) = self.pending.pop_front() {
                oldest.await?;
            }
        }
        let ack = self.transport.publish(message).await?;
        self.pending.push_back(ack);
        Ok(())
    }

    /// Acks still outstanding.
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    /// Waits for every outstanding ack; the first failure is returned.
    pub async fn flush(&mut self) -> Result<(), PublishError> {
        let mut first_error = None;
        while let Some(ack) = self.pending.pop_front() {
            if let Err(err) = ack.await {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
