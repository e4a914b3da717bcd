//! Per-deployment settings of declared subscribers: what an operator changes
//! without a rebuild (`max_in_flight`, `ack_wait`, `max_deliver`, the
//! durable name, the attempt timeout, the dead-letter subject), by
//! subscriber name, over what the `#[subscriber]` attribute or the builder
//! says. They apply to subscribers found by [`App::discover`](crate::App::discover)
//! too, and deserialize with serde, so they load with whatever configuration
//! library the app already uses.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::{DeadLetter, Error, Subscriber};

/// Overrides for one subscriber; a field left `None` keeps what the code
/// says. Durations are humantime strings (`"30s"`, `"1m 30s"`) when
/// deserialized; `dead_letter` is a subject, or `false` to turn dead letters
/// off.
///
/// ```
/// # #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
/// # #[event(channel = "orders.placed")]
/// # struct OrderPlaced { id: u64 }
/// #[flowgate::subscriber(durable = "billing", max_in_flight = 32)]
/// async fn bill(order: OrderPlaced) -> Result<(), std::io::Error> { Ok(()) }
///
/// // From a file or the environment, through any serde format:
/// let settings: std::collections::BTreeMap<String, flowgate::SubscriberSettings> =
///     serde_json::from_str(r#"{ "bill": { "max_in_flight": 64, "ack_wait": "1m" } }"#)?;
/// let app = flowgate::App::new().settings(settings).discover();
/// let bill = app.subscribers().iter().find(|s| s.name() == "bill").expect("discovered");
/// assert_eq!(bill.spec().max_in_flight, 64);
/// assert_eq!(bill.spec().ack_wait, std::time::Duration::from_secs(60));
/// assert_eq!(bill.spec().durable.as_deref(), Some("billing"), "kept from the attribute");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubscriberSettings {
    /// The durable consumer's name.
    pub durable: Option<String>,
    /// Handlers running at once.
    pub max_in_flight: Option<usize>,
    /// How long the broker waits for an ack before redelivering.
    #[serde(deserialize_with = "humantime_duration")]
    pub ack_wait: Option<Duration>,
    /// The failure budget: deliveries of one message.
    pub max_deliver: Option<u32>,
    /// The bound on each handler attempt.
    #[serde(deserialize_with = "humantime_duration")]
    pub timeout: Option<Duration>,
    /// Where messages that cannot be handled go.
    #[serde(deserialize_with = "dead_letter")]
    pub dead_letter: Option<DeadLetter>,
}

impl SubscriberSettings {
    /// Takes every field `later` sets.
    pub(crate) fn merge(&mut self, later: SubscriberSettings) {
        let SubscriberSettings {
            durable,
            max_in_flight,
            ack_wait,
            max_deliver,
            timeout,
            dead_letter,
        } = later;
        self.durable = durable.or(self.durable.take());
        self.max_in_flight = max_in_flight.or(self.max_in_flight);
        self.ack_wait = ack_wait.or(self.ack_wait);
        self.max_deliver = max_deliver.or(self.max_deliver);
        self.timeout = timeout.or(self.timeout);
        self.dead_letter = dead_letter.or(self.dead_letter.take());
    }

    /// `subscriber` with these overrides.
    pub(crate) fn apply(&self, mut subscriber: Subscriber) -> Subscriber {
        if let Some(durable) = &self.durable {
            subscriber = subscriber.durable(durable.clone());
        }
        if let Some(max_in_flight) = self.max_in_flight {
            subscriber = subscriber.max_in_flight(max_in_flight);
        }
        if let Some(ack_wait) = self.ack_wait {
            subscriber = subscriber.ack_wait(ack_wait);
        }
        if let Some(max_deliver) = self.max_deliver {
            subscriber = subscriber.max_deliver(max_deliver);
        }
        if let Some(timeout) = self.timeout {
            subscriber = subscriber.timeout(timeout);
        }
        if let Some(dead_letter) = &self.dead_letter {
            subscriber = subscriber.dead_letter(dead_letter.clone());
        }
        subscriber
    }
}

/// Fails when `settings` name a subscriber the app does not have: a typo in a
/// settings file must not pass unnoticed.
pub(crate) fn check_names(
    subscribers: &[Subscriber],
    settings: &BTreeMap<String, SubscriberSettings>,
) -> Result<(), Error> {
    let Some(unknown) = settings
        .keys()
        .find(|name| !subscribers.iter().any(|s| s.name() == name.as_str()))
    else {
        return Ok(());
    };
    let known: Vec<&str> = subscribers.iter().map(Subscriber::name).collect();
    Err(Error::Config(format!(
        "the settings name subscriber `{unknown}`, which the app does not have (it has: {}); fix the name, or add the subscriber",
        if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        }
    )))
}

fn humantime_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map(Some).map_err(|err| {
        serde::de::Error::custom(format!(
            "`{text}` is not a duration like \"30s\" or \"1m 30s\": {err}"
        ))
    })
}

fn dead_letter<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<DeadLetter>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Subject(String),
        Flag(bool),
    }
    match Given::deserialize(deserializer)? {
        Given::Subject(subject) => Ok(Some(DeadLetter::Subject(subject))),
        Given::Flag(false) => Ok(Some(DeadLetter::Disabled)),
        Given::Flag(true) => Ok(Some(DeadLetter::PerChannel)),
    }
}
