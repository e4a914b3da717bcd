//! The NATS Streaming wire messages, generated at build time from
//! `proto/stan.proto` (the reference client's `pb/protocol.proto`, same field
//! numbers) by prost-build and protox. Never edited by hand.
//!
//! ```
//! use flowgate::transport::stan::proto::{Ack, StartPosition};
//! use prost::Message;
//!
//! let ack = Ack { subject: "orders.placed".into(), sequence: 7 };
//! let decoded = Ack::decode(ack.encode_to_vec().as_slice()).expect("round trip");
//! assert_eq!(decoded.sequence, 7);
//! assert_eq!(StartPosition::First as i32, 4);
//! ```

include!(concat!(env!("OUT_DIR"), "/pb.rs"));
