//! What a subscriber asks of a transport.

use std::time::{Duration, SystemTime};

/// Where a new subscription starts reading its channel.
///
/// A durable that already exists resumes where it was; it keeps the start it
/// was created with, and asking for another one is a startup error
/// ([`Error::ConsumerMismatch`](crate::Error::ConsumerMismatch)), never silent drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartPosition {
    /// Only messages published after the subscription is made (the default).
    #[default]
    New,
    /// Every message the channel still holds.
    All,
    /// The last message of the channel, then everything after it.
    Last,
    /// From this stream sequence on.
    Sequence(u64),
    /// From the first message published at or after this time.
    Time(SystemTime),
}

/// Who settles a delivery: the runtime from the handler's outcome, or the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckMode {
    /// `Ok` acks, `Err` naks, a decode failure terminates.
    #[default]
    Auto,
    /// The handler takes a [`Message`](crate::Message) and acks it itself; a
    /// message it leaves unsettled is nak'd when the handler returns.
    Manual,
    /// Like `Auto`, but one ack covers every message before it (JetStream's
    /// ack-all policy), so the server does less work per message. flowgate
    /// acks only the contiguous prefix of handled messages, never past one
    /// that is running or awaits redelivery, and never while the broker holds
    /// unacked messages this subscription did not receive (deliveries lost in
    /// transit, another instance's). A failing message holds back the acks
    /// of those after it until it succeeds or is dead-lettered (its retry
    /// waits are capped at the ack wait, and a `max_deliver` is required);
    /// handled messages waiting behind it are kept alive and not run again.
    Coalesced,
}

/// Everything a transport needs to subscribe one handler.
///
/// ```
/// use std::time::Duration;
/// use flowgate::SubscriptionSpec;
///
/// let spec = SubscriptionSpec::new("orders.placed").with_durable("billing");
/// assert_eq!(spec.ack_wait, Duration::from_secs(30));
/// assert_eq!(spec.max_in_flight, 1024);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSpec {
    /// The subject to consume: a concrete subject, or a pattern (`orders.*`,
    /// `orders.>`) that matches many; each delivery's
    /// [`Metadata::subject`](crate::Metadata::subject) is the concrete one.
    pub channel: String,
    /// The durable name: the broker keeps the position across restarts.
    pub durable: Option<String>,
    /// A queue group: members share the work, each message goes to one of them.
    /// With a durable too, the group is identified by the durable (as a durable
    /// queue group of NATS Streaming): members must use the same durable name.
    pub queue: Option<String>,
    /// Where a new subscription starts.
    pub start: StartPosition,
    /// How long the broker waits for a settlement before it redelivers.
    pub ack_wait: Duration,
    /// The failure budget: the most attempts of one message, in-process
    /// retries and redeliveries together; `None` is unlimited.
    pub max_deliver: Option<u32>,
    /// The most handlers running at once (and unacked messages held).
    pub max_in_flight: usize,
    /// Who settles deliveries.
    pub ack: AckMode,
}

impl SubscriptionSpec {
    /// The default ack wait, as in the NATS Streaming and JetStream clients.
    pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
    /// The default bound on concurrent handlers, as in the NATS Streaming client.
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
    /// The default failure budget.
    pub const DEFAULT_MAX_DELIVER: u32 = 10;

    /// A spec for `channel` with every other setting at its default.
    pub fn new(channel: impl Into<String>) -> Self {
        Self {
            channel: channel.into(),
            durable: None,
            queue: None,
            start: StartPosition::New,
            ack_wait: Self::DEFAULT_ACK_WAIT,
            max_deliver: Some(Self::DEFAULT_MAX_DELIVER),
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
            ack: AckMode::Auto,
        }
    }

    /// Sets the durable name.
    pub fn with_durable(mut self, durable: impl Into<String>) -> Self {
        self.durable = Some(durable.into());
        self
    }

    /// Checks names and limits before they reach a broker.
    ///
    /// ```
    /// let mut spec = flowgate::SubscriptionSpec::new("orders.placed");
    /// spec.max_in_flight = 0;
    /// assert!(spec.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), crate::Error> {
        crate::validate_channel_pattern(&self.channel)?;
        if let Some(durable) = &self.durable {
            crate::validate_consumer_name("durable", durable)?;
        }
        if let Some(queue) = &self.queue {
            crate::validate_consumer_name("queue", queue)?;
        }
        if self.max_in_flight == 0 {
            return Err(crate::Error::Config(format!(
                "max_in_flight for `{}` is 0: set it to 1 or more",
                self.channel
            )));
        }
        if self.max_deliver == Some(0) {
            return Err(crate::Error::Config(format!(
                "max_deliver for `{}` is 0: set it to 1 or more, or leave it out for no limit",
                self.channel
            )));
        }
        if self.ack_wait < Duration::from_secs(1) {
            return Err(crate::Error::Config(format!(
                "ack_wait for `{}` is {:?}: brokers need at least 1s",
                self.channel, self.ack_wait
            )));
        }
        Ok(())
    }
}
