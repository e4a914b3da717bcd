//! Shared helpers of the end-to-end tests: a real `nats-server` per test,
//! polling with a deadline, and reading a consumer's state from the broker.
//!
//! ```no_run
//! # async fn demo() {
//! use std::time::Duration;
//! let server = flowgate_tests::NatsServer::start().await;
//! let nats = server.jetstream().await;
//! // ... start an app, publish ...
//! let acked = flowgate_tests::eventually(Duration::from_secs(10), || async {
//!     flowgate_tests::consumer_state(&nats, "orders.placed", "billing")
//!         .await
//!         .is_some_and(|state| state.ack_floor == 10)
//! })
//! .await;
//! assert!(acked);
//! # }
//! ```

pub mod conformance;
mod consumer;
pub mod fault;
mod server;
pub mod stan_double;
mod wait;

pub use consumer::{consumer_state, stored_messages, stream_messages, ConsumerState};
pub use fault::{FaultProxy, NatsCluster};
pub use server::{server_binary, NatsServer, ServerBinary, SERVER_VAR};
pub use wait::{eventually, round_trip};

/// Sends test logs to the test's captured output; `RUST_LOG` picks the level
/// (default: warnings of flowgate only). Safe to call from every test.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("flowgate=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// The channel an event type declares with `#[event(channel = "...")]`.
///
/// Panics when the type declares none.
pub fn channel_of<E: flowgate::Event>() -> &'static str {
    E::CHANNEL.unwrap_or_else(|| {
        panic!(
            "`{}` declares no channel: add #[event(channel = \"...\")]",
            std::any::type_name::<E>()
        )
    })
}

/// How long an end-to-end test waits for a condition before it fails.
pub const DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// A handler error for tests: its text is the message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct JobError(pub String);

/// Locks a test's shared state, ignoring poisoning (a panicking handler test
/// must not poison the state the assertions read).
pub fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
