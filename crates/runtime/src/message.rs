//! [`Message`]: a payload together with its delivery metadata.

use std::ops::Deref;
use std::time::Duration;

use crate::request::{ManualAck, Settlement};
use crate::{AckError, Metadata};

/// A decoded payload with what the broker said about its delivery.
///
/// Take `Message<T>` instead of `T` to read the subject, sequence, delivery
/// count, timestamp or headers; with `ack = "manual"` it also settles the
/// message.
///
/// ```
/// # #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
/// # #[event(channel = "orders.placed")]
/// # struct OrderPlaced { id: u64 }
/// # #[derive(Debug, thiserror::Error)] #[error("x")] struct E;
/// #[flowgate::subscriber(durable = "audit")]
/// async fn audit(order: flowgate::Message<OrderPlaced>) -> Result<(), E> {
///     println!("order {} at sequence {}", order.id, order.stream_sequence());
///     Ok(())
/// }
///
/// // Handlers stay plain async fns: call them in your own tests.
/// # tokio_test(async {
/// let meta = flowgate::Metadata::new("orders.placed", 3, 1, std::time::SystemTime::now(), None);
/// audit(flowgate::Message::new(OrderPlaced { id: 7 }, meta)).await.unwrap();
/// # });
/// # fn tokio_test(f: impl std::future::Future<Output = ()>) {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug)]
pub struct Message<T> {
    payload: T,
    metadata: Metadata,
    attempt: u32,
    manual_ack: Option<ManualAck>,
}

impl<T> Message<T> {
    /// A message as a handler would receive it; for calling handlers in tests.
    pub fn new(payload: T, metadata: Metadata) -> Self {
        Self {
            attempt: metadata.delivery_count().max(1),
            payload,
            metadata,
            manual_ack: None,
        }
    }

    pub(crate) fn with_delivery_state(mut self, attempt: u32, ack: Option<ManualAck>) -> Self {
        self.attempt = attempt;
        self.manual_ack = ack;
        self
    }

    /// Which attempt this is within the failure budget, counting in-process
    /// retries and broker redeliveries together (1 for the very first try).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The decoded payload.
    pub fn payload(&self) -> &T {
        &self.payload
    }

    /// Takes the payload out.
    pub fn into_payload(self) -> T {
        self.payload
    }

    /// The delivery metadata: subject, sequence, delivery count, timestamp, headers.
    /// (`Deref` reaches the payload's fields.)
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The subject the message was published on.
    pub fn subject(&self) -> &str {
        self.metadata.subject()
    }

    /// The message's sequence in its stream.
    pub fn stream_sequence(&self) -> u64 {
        self.metadata.stream_sequence()
    }

    /// How many times it has been delivered, this time included.
    pub fn delivery_count(&self) -> u32 {
        self.metadata.delivery_count()
    }

    /// Acks the message (`ack = "manual"` subscribers only).
    pub async fn ack(&self) -> Result<(), AckError> {
        self.settle("ack", Settlement::Ack).await
    }

    /// Asks for redelivery after `delay` (`ack = "manual"` subscribers only).
    pub async fn nak(&self, delay: Option<Duration>) -> Result<(), AckError> {
        self.settle("nak", Settlement::Nak(delay)).await
    }

    /// Stops redelivery for good (`ack = "manual"` subscribers only).
    pub async fn term(&self) -> Result<(), AckError> {
        self.settle("term", Settlement::Term).await
    }

    /// Restarts the ack wait while work goes on (`ack = "manual"` subscribers only).
    pub async fn in_progress(&self) -> Result<(), AckError> {
        self.settle("progress", Settlement::InProgress).await
    }

    async fn settle(&self, action: &'static str, how: Settlement) -> Result<(), AckError> {
        match &self.manual_ack {
            Some(handle) => handle.settle(how).await,
            None => Err(AckError::new(
                action,
                &self.metadata,
                "this subscriber settles messages itself: add ack = \"manual\" to #[subscriber] to settle by hand".into(),
            )),
        }
    }
}

impl<T> Deref for Message<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.payload
    }
}
