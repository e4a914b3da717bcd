//! The conformance suite on the in-memory broker of `flowgate-testkit`,
//! under paused time: ack waits and quiet windows take no real time.

flowgate_tests::conformance_suite!(
    tokio::test(start_paused = true),
    flowgate_tests::conformance::Memory::new()
);
