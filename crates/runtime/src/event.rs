//! Typed payloads: the [`Event`] trait that `#[derive(flowgate::Event)]` implements.

use bytes::Bytes;

use crate::asyncapi::EventSchema;

/// A payload type that travels on a channel.
///
/// Derive it rather than implementing it by hand: the derive picks the codec
/// (`json`, the default, or `protobuf`) and the channel the type is published on.
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
/// #[event(channel = "orders.placed")]
/// struct OrderPlaced {
///     id: u64,
///     total_cents: i64,
/// }
///
/// use flowgate::Event;
/// let bytes = OrderPlaced { id: 7, total_cents: 1250 }.encode().unwrap();
/// assert_eq!(OrderPlaced::decode(&bytes).unwrap().id, 7);
/// assert_eq!(OrderPlaced::CHANNEL, Some("orders.placed"));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a flowgate event",
    label = "add #[derive(flowgate::Event)] (and serde or prost derives) to this type"
)]
pub trait Event: Sized + Send + 'static {
    /// The channel this type is published on, when the type declares one.
    const CHANNEL: Option<&'static str>;

    /// Serializes the event into the bytes that go on the wire.
    fn encode(&self) -> Result<Bytes, EncodeError>;

    /// Parses an event from the bytes of a delivery.
    fn decode(payload: &[u8]) -> Result<Self, DecodeError>;

    /// What the AsyncAPI document ([`App::asyncapi`](crate::App::asyncapi))
    /// says about this type. The derive gives the codec's content type and,
    /// where it can, a schema (see [`EventSchema`]); the default names the
    /// type only.
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
    /// struct OrderPlaced {
    ///     id: u64,
    /// }
    ///
    /// use flowgate::Event;
    /// let schema = OrderPlaced::asyncapi_schema();
    /// assert_eq!(schema.name(), "OrderPlaced");
    /// assert_eq!(schema.content_type(), Some("application/json"));
    /// ```
    fn asyncapi_schema() -> EventSchema {
        EventSchema::named(std::any::type_name::<Self>())
    }
}

/// A payload that could not be turned into the handler's type.
///
/// A decode failure is permanent: the message is terminated, never redelivered.
#[derive(Debug, thiserror::Error)]
#[error("payload is not a valid {codec} `{type_name}`: {source}; the message is terminated, fix the publisher")]
pub struct DecodeError {
    codec: &'static str,
    type_name: &'static str,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl DecodeError {
    /// A decode error for `type_name` from the codec called `codec`.
    ///
    /// ```
    /// let err = flowgate::DecodeError::new("json", "Order", "expected `{`".into());
    /// assert!(err.to_string().contains("Order"));
    /// ```
    pub fn new(
        codec: &'static str,
        type_name: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    ) -> Self {
        Self {
            codec,
            type_name,
            source,
        }
    }

    /// The type that failed to decode.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }
}

/// An event that could not be serialized.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode `{type_name}` as {codec}: {source}")]
pub struct EncodeError {
    codec: &'static str,
    type_name: &'static str,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl EncodeError {
    /// An encode error for `type_name` from the codec called `codec`.
    ///
    /// ```
    /// let err = flowgate::EncodeError::new("json", "Order", "key must be a string".into());
    /// assert!(err.to_string().contains("json"));
    /// ```
    pub fn new(
        codec: &'static str,
        type_name: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    ) -> Self {
        Self {
            codec,
            type_name,
            source,
        }
    }
}
