//! What the macros generate, checked through the runtime's own types.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flowgate::{AckMode, Event, Message, StartPosition};

/// A JSON event with a channel.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(channel = "orders.placed")]
pub struct OrderPlaced {
    id: u64,
    total_cents: i64,
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(codec = "json")]
struct Untagged {
    note: String,
}

#[derive(Clone, PartialEq, prost::Message, flowgate::Event)]
#[event(channel = "orders.shipped", codec = "protobuf")]
struct Shipped {
    #[prost(uint64, tag = "1")]
    order_id: u64,
    #[prost(string, tag = "2")]
    carrier: String,
}

/// A handler error.
#[derive(Debug)]
pub struct BillingError;

impl std::fmt::Display for BillingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("card declined")
    }
}

impl std::error::Error for BillingError {}

/// Every key.
#[flowgate::subscriber(
    channel = "orders.placed.eu",
    durable = "billing",
    queue = "billing-workers",
    start = "2024-05-01T12:30:00.5Z",
    ack_wait = "1m 30s",
    max_deliver = 5,
    max_in_flight = 32,
    ack = "auto",
    timeout = "10s",
    dead_letter = "orders.failed"
)]
async fn bill(order: OrderPlaced) -> Result<(), BillingError> {
    if order.total_cents < 0 {
        return Err(BillingError);
    }
    Ok(())
}

/// No keys: the channel comes from the payload type.
#[flowgate::subscriber]
pub(crate) async fn ship(shipped: Shipped) -> Result<(), std::io::Error> {
    let _ = shipped;
    Ok(())
}

/// Manual acks through `Message<T>`, channel from the payload type, no dead letters.
#[flowgate::subscriber(ack = "manual", start = 42, dead_letter = false)]
pub async fn audit(message: Message<OrderPlaced>) -> Result<(), BillingError> {
    let _ = message.payload();
    Ok(())
}

/// A `Message<T>` with automatic acks; a type with no channel, given one here.
#[flowgate::subscriber(channel = "notes", start = "all")]
async fn note(message: flowgate::Message<Untagged>) -> Result<(), BillingError> {
    let _ = message;
    Ok(())
}

mod nested {
    use super::OrderPlaced;

    #[flowgate::subscriber(start = "last", durable = "nested")]
    pub(super) async fn r#refund(order: OrderPlaced) -> Result<(), std::io::Error> {
        let _ = order;
        Ok(())
    }
}

#[test]
fn every_key_reaches_the_spec() {
    let sub = bill::subscriber();
    let spec = sub.spec();
    assert_eq!(sub.name(), "bill");
    assert_eq!(spec.channel, "orders.placed.eu", "the attribute wins");
    assert_eq!(spec.durable.as_deref(), Some("billing"));
    assert_eq!(spec.queue.as_deref(), Some("billing-workers"));
    let expected = UNIX_EPOCH + Duration::new(1_714_566_600, 500_000_000);
    assert_eq!(spec.start, StartPosition::Time(expected));
    assert_eq!(spec.ack_wait, Duration::from_secs(90));
    assert_eq!(spec.max_deliver, Some(5));
    assert_eq!(spec.max_in_flight, 32);
    assert_eq!(spec.ack, AckMode::Auto);
    assert_eq!(sub.dead_letter_subject().as_deref(), Some("orders.failed"));
    spec.validate()
        .expect("the macro only lets valid specs through");
}

#[test]
fn keys_left_out_keep_the_defaults() {
    let sub = ship::subscriber();
    let spec = sub.spec();
    let defaults = flowgate::SubscriptionSpec::new("orders.shipped");
    assert_eq!(sub.name(), "ship");
    assert_eq!(*spec, defaults, "the channel comes from the payload type");
}

#[test]
fn manual_ack_with_message() {
    assert_eq!(audit::subscriber().dead_letter_subject(), None);
    assert_eq!(
        ship::subscriber().dead_letter_subject().as_deref(),
        Some("dlq.orders.shipped"),
        "dead letters default to dlq.<channel>"
    );
    let spec = audit::subscriber().spec().clone();
    assert_eq!(
        spec.channel, "orders.placed",
        "Message<T> reads T's channel"
    );
    assert_eq!(spec.ack, AckMode::Manual);
    assert_eq!(spec.start, StartPosition::Sequence(42));
}

#[test]
fn message_with_auto_ack_and_channel_override() {
    let spec = note::subscriber().spec().clone();
    assert_eq!(spec.channel, "notes");
    assert_eq!(spec.ack, AckMode::Auto);
    assert_eq!(spec.start, StartPosition::All);
}

#[test]
fn visibility_and_raw_names() {
    let sub = nested::refund::subscriber();
    assert_eq!(sub.name(), "refund");
    assert_eq!(sub.spec().start, StartPosition::Last);
}

#[test]
fn works_inside_fn_bodies() {
    #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
    #[event(channel = "local.events")]
    struct Local {
        n: u8,
    }

    #[flowgate::subscriber(max_in_flight = 2)]
    async fn local(event: Local) -> Result<(), std::io::Error> {
        let _ = event.n;
        Ok(())
    }

    let sub = local::subscriber();
    assert_eq!(sub.spec().channel, "local.events");
    assert_eq!(sub.spec().max_in_flight, 2);
}

#[test]
fn every_subscriber_is_registered() {
    let mut names: Vec<String> = flowgate::__private::SUBSCRIBERS
        .iter()
        .map(|make| make().name().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["audit", "bill", "local", "note", "refund", "ship"]);
}

#[tokio::test]
async fn the_fn_is_still_callable() {
    let order = OrderPlaced {
        id: 1,
        total_cents: 1250,
    };
    assert!(bill(order).await.is_ok());
    let refund = OrderPlaced {
        id: 2,
        total_cents: -5,
    };
    assert!(bill(refund).await.is_err());
    let shipped = Shipped {
        order_id: 1,
        carrier: "post".into(),
    };
    assert!(ship(shipped).await.is_ok());
    assert!(nested::refund(OrderPlaced {
        id: 3,
        total_cents: 0
    })
    .await
    .is_ok());
    let meta = flowgate::Metadata::new("orders.placed", 3, 1, SystemTime::now(), None);
    let message = Message::new(
        OrderPlaced {
            id: 4,
            total_cents: 1,
        },
        meta,
    );
    assert!(audit(message).await.is_ok());
}

#[test]
fn json_round_trip() {
    let order = OrderPlaced {
        id: 7,
        total_cents: 1250,
    };
    let bytes = order.encode().expect("encodes");
    assert_eq!(&bytes[..], br#"{"id":7,"total_cents":1250}"#);
    assert_eq!(OrderPlaced::decode(&bytes).expect("decodes"), order);
    assert_eq!(OrderPlaced::CHANNEL, Some("orders.placed"));
    assert_eq!(Untagged::CHANNEL, None);
    let err = OrderPlaced::decode(b"not json").expect_err("garbage");
    assert!(err.to_string().contains("OrderPlaced"), "{err}");
}

#[test]
fn protobuf_round_trip() {
    let shipped = Shipped {
        order_id: 9,
        carrier: "post".into(),
    };
    let bytes = shipped.encode().expect("encodes");
    assert_eq!(bytes, prost::Message::encode_to_vec(&shipped));
    assert_eq!(Shipped::decode(&bytes).expect("decodes"), shipped);
    assert_eq!(Shipped::CHANNEL, Some("orders.shipped"));
}
