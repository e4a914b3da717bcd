//! The conformance suite on JetStream, each scenario on a `nats-server` of
//! its own, in real time.

flowgate_tests::conformance_suite!(
    tokio::test(flavor = "multi_thread", worker_threads = 2),
    flowgate_tests::conformance::JetStreamHarness::start().await
);
