//! Typed publishing into the broker, and reading back what was published.

use flowgate::{DecodeError, Event, PublishAck, PublishError, PublishOptions, Publisher};

use crate::InMemory;

impl InMemory {
    /// Publishes `event` on its type's channel, as
    /// [`Publisher::publish`](flowgate::Publisher::publish) does: the message
    /// is stored when this returns.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flowgate::PublishError> {
    /// #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
    /// #[event(channel = "orders.placed")]
    /// struct OrderPlaced {
    ///     id: u64,
    /// }
    ///
    /// let broker = flowgate_testkit::InMemory::new();
    /// let receipt = broker.publish_event(&OrderPlaced { id: 7 }).await?;
    /// assert_eq!(receipt.sequence, 1);
    /// # Ok(()) }
    /// ```
    pub async fn publish_event<E: Event>(&self, event: &E) -> Result<PublishAck, PublishError> {
        self.publish_event_with(event, PublishOptions::new()).await
    }

    /// Publishes `event` with `options` (another channel, a message id, headers).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flowgate::PublishError> {
    /// # #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
    /// # #[event(channel = "orders.placed")]
    /// # struct OrderPlaced { id: u64 }
    /// use flowgate::PublishOptions;
    ///
    /// let broker = flowgate_testkit::InMemory::new();
    /// let once = PublishOptions::new().message_id("order-7");
    /// broker.publish_event_with(&OrderPlaced { id: 7 }, once.clone()).await?;
    /// let again = broker.publish_event_with(&OrderPlaced { id: 7 }, once).await?;
    /// assert!(again.duplicate);
    /// assert_eq!(broker.channel_messages("orders.placed").len(), 1);
    /// # Ok(()) }
    /// ```
    pub async fn publish_event_with<E: Event>(
        &self,
        event: &E,
        options: PublishOptions,
    ) -> Result<PublishAck, PublishError> {
        Publisher::new(self.clone())
            .publish_with(event, options)
            .await
    }

    /// Every message on `E`'s channel decoded as `E`, oldest first: what the
    /// test and the handlers published there.
    ///
    /// # Panics
    ///
    /// When `E` declares no channel; use
    /// [`published_on`](Self::published_on) for those types.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, flowgate::Event)]
    /// #[event(channel = "orders.shipped")]
    /// struct OrderShipped {
    ///     id: u64,
    /// }
    ///
    /// let broker = flowgate_testkit::InMemory::new();
    /// broker.publish_event(&OrderShipped { id: 7 }).await?;
    /// assert_eq!(broker.published::<OrderShipped>()?, vec![OrderShipped { id: 7 }]);
    /// # Ok(()) }
    /// ```
    pub fn published<E: Event>(&self) -> Result<Vec<E>, DecodeError> {
        let channel = E::CHANNEL.unwrap_or_else(|| {
            panic!(
                "`{}` declares no channel: use `published_on::<{0}>(channel)`",
                std::any::type_name::<E>()
            )
        });
        self.published_on(channel)
    }

    /// Every message on `channel` decoded as `E`, oldest first.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, flowgate::Event)]
    /// # struct Ping { n: u32 }
    /// use flowgate::PublishOptions;
    ///
    /// let broker = flowgate_testkit::InMemory::new();
    /// broker.publish_event_with(&Ping { n: 1 }, PublishOptions::new().channel("pings")).await?;
    /// assert_eq!(broker.published_on::<Ping>("pings")?, vec![Ping { n: 1 }]);
    /// # Ok(()) }
    /// ```
    pub fn published_on<E: Event>(&self, channel: &str) -> Result<Vec<E>, DecodeError> {
        self.channel_messages(channel)
            .iter()
            .map(|message| E::decode(&message.payload))
            .collect()
    }
}
