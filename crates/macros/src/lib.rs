//! Procedural macros for [flowgate](https://docs.rs/flowgate): `#[subscriber]`
//! and `#[derive(Event)]`.
//!
//! Depend on `flowgate` and use them through it (`flowgate::subscriber`,
//! `flowgate::Event`): the generated code names the runtime by the absolute
//! path `::flowgate::...`, so what you import never matters.
//!
//! Every mistake in an attribute is a compile error pointing at the offending
//! token; `crates/macros-tests/tests/ui` pins each message.

mod attr;
mod event;
mod names;
mod subscriber;

use proc_macro::TokenStream;

/// Derives `flowgate::Event`: the codec and, optionally, the channel of a
/// payload type.
///
/// ```text
/// #[event(channel = "orders.placed", codec = "json")]
/// #[event(codec = "protobuf", proto = "proto/orders.proto")]
/// ```
///
/// - `channel`: the subject the type is published on. Optional; a
///   `#[subscriber]` of the type uses it when it names no channel itself.
///   Checked at compile time: dot-separated tokens of ASCII letters, digits,
///   `-` and `_`; a pattern (`orders.*`, `orders.>`) is published with
///   `publish_to(subject, &event)`.
/// - `codec`: `"json"` (the default; the type implements serde's `Serialize`
///   and `Deserialize`) or `"protobuf"` (the type is a `prost::Message`).
/// - `proto`: for a protobuf event, the `.proto` file that defines it, relative
///   to the crate's Cargo.toml (`proto = "proto/orders.proto"`). Optional; the
///   file is read at compile time and its source goes into the AsyncAPI
///   document (`flowgate::App::asyncapi`).
///
/// The derive also implements `Event::asyncapi_schema`: the codec's content
/// type, and for a json event that also derives `schemars::JsonSchema` (with
/// flowgate's `schemars` feature) its JSON Schema, found without a bound by
/// autoref specialisation; other types are named by their Rust type.
///
/// Generic types are refused; implement `flowgate::Event` by hand for those.
///
/// (The example is on `flowgate::Event`, where it runs as a doc test.)
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    event::expand(input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Turns `async fn name(payload: P, extractors...) -> Result<O, E>` into a
/// flowgate subscriber that `flowgate::App::discover()` finds.
///
/// The fn stays as written (call it directly in tests). Next to it,
/// `name::subscriber()` builds the `flowgate::Subscriber`, and the subscriber
/// is registered with the binary for `App::discover()`. (`name` is also a
/// hidden empty struct: types and values live in separate namespaces, so it
/// does not clash with the fn.)
///
/// ```text
/// #[subscriber(
///     channel = "orders.placed",   // default: the channel the payload type declares
///     durable = "billing",         // durable name: letters, digits, `-`, `_`
///     queue = "billing",           // queue group: members share the work
///     start = "new",               // "new" | "all" | "last" | 42 | "2024-05-01T00:00:00Z"
///     ack_wait = "30s",            // humantime duration, at least 1s
///     max_deliver = 5,             // the failure budget: deliveries of one message, at least 1
///     max_in_flight = 32,          // handlers running at once, at least 1
///     timeout = "10s",             // bounds each attempt; a timed-out attempt is retried
///     dead_letter = "orders.failed", // default "dlq.<channel>"; `false` turns dead letters off
///     ack = "auto",                // "auto" | "manual" (needs a Message<T> parameter)
///                                  // | "coalesced" (JetStream's ack-all: fewer acks)
/// )]
/// ```
///
/// Every key is optional; a key left out keeps the runtime's default
/// (`ack_wait` 30s, `max_deliver` 10, `max_in_flight` 1024, no `timeout`). The
/// channel may be a pattern (`orders.*`, `orders.>`).
///
/// The fn takes one payload parameter `P`, an event type
/// (`#[derive(flowgate::Event)]`) or a `flowgate::Message<T>` of one, which
/// also carries the delivery metadata and, with `ack = "manual"`, acks by
/// hand; and, in any order, any number of extractors: `State<T>`,
/// `flowgate::extract::Publisher<E>`, `Subject`, `Attempt`, `Headers`,
/// `Metadata`, or a type implementing `flowgate::FromRequest`.
///
/// It returns `Result<O, E>`: `O` is `()`, or an event (an `Option` or a
/// `Vec` of events) that flowgate publishes, with a de-duplication id, before
/// it acks the input (see `flowgate::output`).
///
/// `Ok` acks the message. An `Err` (or a panic, or a timed-out attempt) is a
/// retryable failure: it is retried with backoff while the failure budget
/// (`max_deliver`) lasts, then the message goes to its dead-letter subject. A
/// permanent failure (`flowgate::Failure::permanent`) and a payload that does
/// not decode go to the dead letters at once. Only once the broker has the
/// dead letter is the original settled.
///
/// (The example is on `flowgate::subscriber`, where it runs as a doc test.)
///
/// Errors point at the offending token: unknown or duplicate keys, values of
/// the wrong type, invalid names, durations or start positions, limits of 0,
/// a fn that is not `async`, is generic, takes a `self`, a borrowed parameter,
/// no parameter, no payload or two of them, a parameter that is neither an
/// event nor an extractor, returns nothing or an `Ok` type that is not an
/// output, or asks for `ack = "manual"` without taking a `Message<T>`. A
/// payload type that declares no channel, used without `channel = "..."`,
/// fails to compile with a message at the parameter type.
#[proc_macro_attribute]
pub fn subscriber(attr: TokenStream, item: TokenStream) -> TokenStream {
    subscriber::expand(attr.into(), item.into()).into()
}
