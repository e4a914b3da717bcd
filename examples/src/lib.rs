//! Runnable flowgate applications; each binary in `src/bin/` is one example:
//!
//! - `quickstart`: JSON events, a publisher and two subscribers, on the
//!   in-memory broker (or JetStream when `NATS_URL` is set).
//! - `telemetry`: protobuf events on JetStream.

/// Event types generated from `proto/telemetry.proto` at build time.
pub mod telemetry {
    #![allow(missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/flowgate.examples.telemetry.rs"));
}
