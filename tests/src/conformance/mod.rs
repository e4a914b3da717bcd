//! One conformance suite for every transport: each scenario is written once,
//! generic over a [`Harness`], and asserts only what handlers and consumers
//! observe (ids, delivery counts and sequences from the delivery metadata,
//! headers, times on [`tokio::time::Instant`]), never broker internals, so
//! the same assertions hold on the in-memory broker, on JetStream and on any
//! later transport.
//!
//! A transport runs the suite with [`conformance_suite!`](crate::conformance_suite):
//!
//! ```text
//! flowgate_tests::conformance_suite!(
//!     tokio::test(start_paused = true),
//!     flowgate_tests::conformance::Memory::new()
//! );
//! ```
//!
//! Times: ack waits are 1 s (the least a broker accepts), so the suite takes
//! seconds on a real server and microseconds of real time on the in-memory
//! broker under paused time. Real-time transports get [`SLACK`] on lower
//! bounds measured from the handler's side.

mod apps;
mod consumers;
mod delivery;
mod flow;
mod harness;
mod observe;
pub mod stan;
mod wildcards;

use std::time::Duration;

pub use consumers::{
    durable_resume, queue_group_without_duplicates, start_all, start_last, start_new,
    start_sequence, start_time,
};
pub use delivery::{
    ack_floor, at_least_once, max_deliver_respected, nak_delay_respected,
    redelivery_after_ack_wait, term_never_redelivered,
};
pub use flow::{
    deduplication_by_message_id, headers_round_trip, max_in_flight_high_water,
    order_with_max_in_flight_one,
};
pub use harness::{Harness, JetStreamHarness, Memory};
pub use observe::{Call, Seen};
pub use stan::StanHarness;
pub use wildcards::{wildcard_at_least_once, wildcard_channels};

/// The channel every scenario uses (each test has a broker of its own).
pub const CHANNEL: &str = "conformance.jobs";

/// The ack wait of every scenario: the least brokers accept.
pub const ACK_WAIT: Duration = Duration::from_secs(1);

/// How long a scenario waits for what it expects before it fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// How long a scenario watches for something that must not happen (a
/// redelivery): two ack waits and a half.
pub const QUIET: Duration = Duration::from_millis(2500);

/// Allowed early arrival on lower time bounds measured by the handler: the
/// broker starts its timers when it sends a message, a little before the
/// handler notes the time.
pub const SLACK: Duration = Duration::from_millis(50);

/// The payload of every scenario.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(channel = "conformance.jobs")]
pub struct Job {
    /// Which job: 1, 2, 3 ... in publish order.
    pub id: u64,
}

/// Declares one `#[test]` per scenario for a harness: the first argument is
/// the test attribute, the second an expression making the harness.
///
/// A transport on which a scenario cannot hold by design lists it after
/// `except` with the reason, and tests what it does instead with a test of
/// its own (named in the reason). The scenario then gets no test; a test
/// `conformance_exceptions` checks that every exception names a scenario of
/// the suite, once, with a reason.
///
/// ```text
/// flowgate_tests::conformance_suite!(
///     tokio::test(flavor = "multi_thread", worker_threads = 2),
///     flowgate_tests::conformance::StanHarness::start().await,
///     except {
///         headers_round_trip: "the protocol has no headers; see headers_are_dropped",
///     }
/// );
/// ```
#[macro_export]
macro_rules! conformance_suite {
    ($attr:meta, $make:expr $(,)?) => {
        $crate::conformance_suite!($attr, $make, except {});
    };
    ($attr:meta, $make:expr, except { $($skip:ident : $reason:literal),* $(,)? } $(,)?) => {
        $crate::conformance_suite!(@filter ($) $attr, $make; [$($skip : $reason),*];
            at_least_once, ack_floor, redelivery_after_ack_wait, nak_delay_respected,
            term_never_redelivered, max_deliver_respected, durable_resume,
            queue_group_without_duplicates, start_new, start_all, start_last,
            start_sequence, start_time, order_with_max_in_flight_one,
            max_in_flight_high_water, headers_round_trip, deduplication_by_message_id,
            wildcard_channels, wildcard_at_least_once);
    };
    (@filter ($d:tt) $attr:meta, $make:expr; [$($skip:ident : $reason:literal),*];
        $($scenario:ident),*) => {
        // One arm per exception (expands to nothing), then every other scenario.
        macro_rules! __conformance_scenario {
            $( ($skip) => {}; )*
            ($d name:ident) => {
                #[$attr]
                async fn $d name() {
                    $crate::init_tracing();
                    let harness = $make;
                    $crate::conformance::$d name(&harness).await;
                }
            };
        }
        $( __conformance_scenario!($scenario); )*
        $crate::conformance_suite!(@check [$($skip : $reason),*]; $($scenario),*);
    };
    (@check []; $($scenario:ident),*) => {};
    (@check [$($skip:ident : $reason:literal),+]; $($scenario:ident),*) => {
        /// Every exception names a scenario of the suite, once, and says why.
        #[test]
        fn conformance_exceptions() {
            let scenarios: &[&str] = &[$(stringify!($scenario)),*];
            let exceptions: &[(&str, &str)] = &[$((stringify!($skip), $reason)),+];
            let mut named = ::std::collections::BTreeSet::new();
            for (scenario, reason) in exceptions {
                assert!(
                    scenarios.contains(scenario),
                    "exception `{scenario}` is not a scenario of the suite"
                );
                assert!(named.insert(*scenario), "exception `{scenario}` is listed twice");
                assert!(!reason.trim().is_empty(), "exception `{scenario}` gives no reason");
            }
        }
    };
}
