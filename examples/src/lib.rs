//! Runnable flowgate applications; each binary in `src/bin/` is one example:
//!
//! - `quickstart`: JSON events, a publisher and two subscribers, on the
//!   in-memory broker (or JetStream when `NATS_URL` is set).
//! - `telemetry`: protobuf events on JetStream.
//! - `migrate`: one handler consuming from NATS Streaming and JetStream side
//!   by side, the way a migration runs.
//! - `shop`: handlers with state (a fake database), a `Publisher` extractor,
//!   a wildcard channel and a typed output ([`shop`]).
//!
//! The benchmark and the Prometheus demo live in `bench/` (package
//! `flowgate-bench`), so their heavy dependencies stay out of this package.

/// Event types generated from `proto/telemetry.proto` at build time.
pub mod telemetry {
    #![allow(missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/flowgate.examples.telemetry.rs"));
}

pub mod shop;

/// Logs to stderr at the level `RUST_LOG` asks for (warnings by default).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
}

/// The exit code of an example: success, or the error printed readably.
pub fn exit_code(outcome: Result<(), Box<dyn std::error::Error>>) -> std::process::ExitCode {
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
