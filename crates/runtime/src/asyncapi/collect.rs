//! From an app's subscribers to the document's channels, operations,
//! messages and schemas.

use serde_json::{json, Map, Value};

use super::ids::Ids;
use super::{components, dead_letters};
use crate::{AckMode, StartPosition, Subscriber};

/// The channels, operations and components of a document.
#[derive(Debug, Clone, Default)]
pub(crate) struct Contents {
    pub(crate) channels: Map<String, Value>,
    pub(crate) operations: Map<String, Value>,
    pub(crate) messages: Map<String, Value>,
    pub(crate) schemas: Map<String, Value>,
}

/// Collects every subscriber, in order.
pub(crate) fn collect(subscribers: &[Subscriber]) -> Contents {
    let mut contents = Contents::default();
    let mut channel_ids = Ids::default();
    let mut message_ids = Ids::default();
    let mut operation_ids = Ids::default();
    for subscriber in subscribers {
        let spec = subscriber.spec();
        let channel = contents.channel(&mut channel_ids, &spec.channel, None);
        let message = subscriber
            .payload_schema()
            .map(|schema| contents.message(&mut message_ids, &schema));
        let operation = operation_ids.unique(subscriber.name());
        let messages = contents.link(&channel, message.as_deref());
        let mut receive = json!({
            "action": "receive",
            "channel": { "$ref": format!("#/channels/{channel}") },
            "messages": messages,
            "summary": format!("`{}` handles the messages of `{}`.", subscriber.name(), spec.channel),
            "x-flowgate": settings(subscriber),
        });
        if let Some(queue) = &spec.queue {
            receive["bindings"] = json!({ "nats": { "queue": queue, "bindingVersion": "0.1.0" } });
        }
        contents.operations.insert(operation.clone(), receive);

        let Some(subject) = subscriber.dead_letter_subject() else {
            continue;
        };
        let description = if crate::is_pattern(&subject) {
            format!(
                "Dead letters of `{}`: each goes to `dlq.<its original subject>`.",
                spec.channel
            )
        } else {
            format!("Dead letters of `{}`.", spec.channel)
        };
        let dead_channel = contents.channel(&mut channel_ids, &subject, Some(description));
        let dead_message = message
            .as_deref()
            .map(|key| contents.dead_letter(&mut message_ids, key));
        let messages = contents.link(&dead_channel, dead_message.as_deref());
        let send = json!({
            "action": "send",
            "channel": { "$ref": format!("#/channels/{dead_channel}") },
            "messages": messages,
            "summary": format!(
                "`{}` sends the messages it cannot handle to `{subject}`.",
                subscriber.name()
            ),
            "x-flowgate": { "deadLetterOf": operation },
        });
        let id = operation_ids.unique(&format!("{operation}.dead_letter"));
        contents.operations.insert(id, send);
    }
    if contents
        .messages
        .values()
        .any(|m| m.get("headers").is_some())
    {
        contents.schemas.insert(
            dead_letters::HEADERS_SCHEMA.to_owned(),
            dead_letters::headers_schema(),
        );
    }
    contents
}

impl Contents {
    /// The key of the channel at `address`, added the first time.
    fn channel(&mut self, ids: &mut Ids, address: &str, description: Option<String>) -> String {
        let (id, new) = ids.of(address, address);
        if new {
            let mut channel = json!({ "address": address, "messages": {} });
            if let Some(description) = description {
                channel["description"] = Value::String(description);
            }
            self.channels.insert(id.clone(), channel);
        }
        id
    }

    /// The key of the message of `schema`'s type, added the first time.
    fn message(&mut self, ids: &mut Ids, schema: &super::EventSchema) -> String {
        let (id, new) = ids.of(schema.type_name(), schema.name());
        if new {
            let (mut payload, definitions) = schema.payload();
            components::merge(&mut self.schemas, &mut payload, definitions);
            let mut message = json!({
                "name": id,
                "title": schema.name(),
                "payload": payload,
                "x-flowgate-type": schema.type_name(),
            });
            if let Some(content_type) = schema.content_type() {
                message["contentType"] = Value::String(content_type.to_owned());
            }
            self.messages.insert(id.clone(), message);
        }
        id
    }

    /// The key of the dead-letter message of the message `original`.
    fn dead_letter(&mut self, ids: &mut Ids, original: &str) -> String {
        let (id, new) = ids.of(
            &format!("\u{0}dead letter of {original}"),
            &format!("{original}DeadLetter"),
        );
        if new {
            let message = dead_letters::message(original, &self.messages[original]);
            self.messages.insert(id.clone(), message);
        }
        id
    }

    /// Adds `message` to `channel`'s messages and returns the operation's
    /// list of references to it (empty without a message).
    fn link(&mut self, channel: &str, message: Option<&str>) -> Value {
        let Some(message) = message else {
            return json!([]);
        };
        if let Some(Value::Object(messages)) = self
            .channels
            .get_mut(channel)
            .and_then(|channel| channel.get_mut("messages"))
        {
            messages.insert(
                message.to_owned(),
                json!({ "$ref": format!("#/components/messages/{message}") }),
            );
        }
        json!([{ "$ref": format!("#/channels/{channel}/messages/{message}") }])
    }
}

/// What the subscription asks of the broker and what the runtime does on
/// failure, as the `x-flowgate` extension of its receive operation.
fn settings(subscriber: &Subscriber) -> Value {
    let spec = subscriber.spec();
    let failure = subscriber.failure();
    let start = match spec.start {
        StartPosition::New => json!("new"),
        StartPosition::All => json!("all"),
        StartPosition::Last => json!("last"),
        StartPosition::Sequence(sequence) => json!({ "sequence": sequence }),
        StartPosition::Time(at) => json!({ "time": crate::dead_letter::rfc3339(at) }),
    };
    let ack = match spec.ack {
        AckMode::Auto => "auto",
        AckMode::Manual => "manual",
        AckMode::Coalesced => "coalesced",
    };
    let duration = |d: std::time::Duration| humantime::format_duration(d).to_string();
    let mut settings = json!({
        "subscriber": subscriber.name(),
        "durable": spec.durable,
        "queue": spec.queue,
        "start": start,
        "ackWait": duration(spec.ack_wait),
        "maxDeliver": spec.max_deliver,
        "maxInFlight": spec.max_in_flight,
        "ack": ack,
        "timeout": failure.timeout.map(duration),
        "deadLetter": subscriber.dead_letter_subject(),
    });
    // Unset options are left out; `null` stays where it means something:
    // no failure budget (`maxDeliver`), dead letters off (`deadLetter`).
    if let Some(settings) = settings.as_object_mut() {
        settings.retain(|key, value| {
            !value.is_null() || matches!(key.as_str(), "maxDeliver" | "deadLetter")
        });
    }
    settings
}
