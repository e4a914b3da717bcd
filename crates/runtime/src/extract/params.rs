//! A handler's whole parameter list, as a tuple of [`FromRequest`] types.

use super::{FromRequest, MissingState, RejectionKind, StateMap};
use crate::asyncapi::EventSchema;
use crate::{HandlerError, Request};

/// The parameter list of a handler: a tuple of [`FromRequest`] types, one
/// of them the payload. Implemented for tuples of up to 12 parameters; you
/// do not implement it yourself.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a handler's parameter list",
    label = "every parameter must be an event, a flowgate::Message, or an extractor"
)]
pub trait Params: Sized + Send + 'static {
    /// How many of the parameters are payloads (a handler needs exactly one).
    const PAYLOADS: usize;

    /// The channel the payload's type declares, if it declares one.
    const CHANNEL: Option<&'static str>;

    /// What the AsyncAPI document says of the payload's type.
    #[doc(hidden)]
    const SCHEMA: Option<fn() -> EventSchema>;

    /// Checks that `state` has what every parameter needs.
    fn check(state: &StateMap) -> Result<(), MissingState>;

    /// Builds every parameter for one attempt at `request`.
    fn from_request(request: &Request, state: &StateMap) -> Result<Self, HandlerError>;
}

/// Calls `$callback!` with the parameter names of each arity from 1 to 12,
/// for what is implemented per parameter list.
macro_rules! for_each_arity {
    ($callback:ident) => {
        $callback!(P1);
        $callback!(P1, P2);
        $callback!(P1, P2, P3);
        $callback!(P1, P2, P3, P4);
        $callback!(P1, P2, P3, P4, P5);
        $callback!(P1, P2, P3, P4, P5, P6);
        $callback!(P1, P2, P3, P4, P5, P6, P7);
        $callback!(P1, P2, P3, P4, P5, P6, P7, P8);
        $callback!(P1, P2, P3, P4, P5, P6, P7, P8, P9);
        $callback!(P1, P2, P3, P4, P5, P6, P7, P8, P9, P10);
        $callback!(P1, P2, P3, P4, P5, P6, P7, P8, P9, P10, P11);
        $callback!(P1, P2, P3, P4, P5, P6, P7, P8, P9, P10, P11, P12);
    };
}
pub(crate) use for_each_arity;

/// The channel of the first payload among a handler's parameters, given as
/// (is it a payload, the channel its type declares).
pub const fn payload_channel(params: &[(bool, Option<&'static str>)]) -> Option<&'static str> {
    first_payload(params)
}

/// Makes what the AsyncAPI document says of a payload type.
type SchemaFn = fn() -> EventSchema;

/// The schema of the first payload among a handler's parameters, given as
/// (is it a payload, its schema).
const fn payload_schema(params: &[(bool, Option<SchemaFn>)]) -> Option<SchemaFn> {
    first_payload(params)
}

/// What the first payload among a handler's parameters declares, given as
/// (is it a payload, what its type declares).
const fn first_payload<T: Copy>(params: &[(bool, Option<T>)]) -> Option<T> {
    let mut i = 0;
    while i < params.len() {
        if params[i].0 {
            return params[i].1;
        }
        i += 1;
    }
    None
}

/// Builds one parameter, its rejection made into the handler's error.
fn take<P: FromRequest>(request: &Request, state: &StateMap) -> Result<P, HandlerError> {
    P::from_request(request, state).map_err(|rejection| match rejection.0 {
        RejectionKind::Decode(err) => HandlerError::Decode(err),
        RejectionKind::Other(source) => HandlerError::Rejected {
            parameter: std::any::type_name::<P>(),
            source,
        },
    })
}

macro_rules! params {
    ($($param:ident),+) => {
        impl<$($param: FromRequest),+> Params for ($($param,)+) {
            const PAYLOADS: usize = 0 $(+ $param::PAYLOAD as usize)+;
            const CHANNEL: Option<&'static str> =
                payload_channel(&[$(($param::PAYLOAD, $param::CHANNEL)),+]);
            const SCHEMA: Option<fn() -> EventSchema> =
                payload_schema(&[$(($param::PAYLOAD, $param::SCHEMA)),+]);

            fn check(state: &StateMap) -> Result<(), MissingState> {
                $($param::check(state)?;)+
                Ok(())
            }

            fn from_request(request: &Request, state: &StateMap) -> Result<Self, HandlerError> {
                Ok(($(take::<$param>(request, state)?,)+))
            }
        }
    };
}

for_each_arity!(params);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::{Attempt, State, Subject};

    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    struct Order {
        id: u64,
    }

    impl crate::Event for Order {
        const CHANNEL: Option<&'static str> = Some("orders.placed");
        fn encode(&self) -> Result<bytes::Bytes, crate::EncodeError> {
            crate::codec::json::encode(self)
        }
        fn decode(payload: &[u8]) -> Result<Self, crate::DecodeError> {
            crate::codec::json::decode(payload)
        }
    }

    fn request(payload: &'static str) -> Request {
        let meta = crate::Metadata::new("orders.placed", 9, 2, std::time::UNIX_EPOCH, None);
        Request::new(payload.into(), meta)
    }

    #[test]
    fn the_payload_is_found_wherever_it_stands() {
        assert_eq!(<(Order,)>::PAYLOADS, 1);
        assert_eq!(<(Subject, Order, Attempt)>::PAYLOADS, 1);
        assert_eq!(<(Subject, Order, Attempt)>::CHANNEL, Some("orders.placed"));
        assert_eq!(<(Subject, Attempt)>::PAYLOADS, 0);
        assert_eq!(<(Order, crate::Message<Order>)>::PAYLOADS, 2);
    }

    #[test]
    fn every_parameter_is_built_from_one_request() {
        let state = StateMap::new().with(5u8);
        let (Attempt(attempt), order, State(five), Subject(subject)) =
            <(Attempt, Order, State<u8>, Subject)>::from_request(&request(r#"{"id":3}"#), &state)
                .expect("built");
        assert_eq!(
            (attempt, order.id, five, subject.as_str()),
            (2, 3, 5, "orders.placed")
        );
    }

    #[test]
    fn a_payload_that_does_not_decode_is_a_decode_error_and_a_missing_state_a_rejection() {
        let state = StateMap::new();
        let err = <(Order,)>::from_request(&request("nope"), &state).expect_err("fails");
        assert!(matches!(err, HandlerError::Decode(_)), "{err:?}");
        let err =
            <(Order, State<u8>)>::from_request(&request(r#"{"id":3}"#), &state).expect_err("fails");
        assert!(
            matches!(err, HandlerError::Rejected { parameter, .. } if parameter.contains("State<u8>")),
            "{err:?}"
        );
        assert_eq!(
            <(Order, State<u8>)>::check(&state)
                .expect_err("missing")
                .type_name(),
            "u8"
        );
    }
}
