//! The payload parameter: an event, or a [`Message`] of one.

use super::{FromRequest, Rejection, StateMap};
use crate::asyncapi::EventSchema;
use crate::{Event, Message, Request};

impl<E: Event> FromRequest for E {
    const PAYLOAD: bool = true;
    const CHANNEL: Option<&'static str> = E::CHANNEL;
    const SCHEMA: Option<fn() -> EventSchema> = Some(E::asyncapi_schema);

    fn from_request(request: &Request, _state: &StateMap) -> Result<Self, Rejection> {
        Ok(E::decode(request.payload())?)
    }
}

impl<E: Event> FromRequest for Message<E> {
    const PAYLOAD: bool = true;
    const CHANNEL: Option<&'static str> = E::CHANNEL;
    const SCHEMA: Option<fn() -> EventSchema> = Some(E::asyncapi_schema);

    fn from_request(request: &Request, _state: &StateMap) -> Result<Self, Rejection> {
        let event = E::decode(request.payload())?;
        Ok(Message::new(event, request.metadata().clone())
            .with_delivery_state(request.attempt(), request.manual_ack().cloned()))
    }
}
