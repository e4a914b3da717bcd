//! The JetStream transport reads the version of the server it is connected
//! to, and refuses features that server is too old for, on every server
//! version the suite runs on.

use flowgate::{Error, ServerFeature, ServerVersion};
use flowgate_tests::{init_tracing, server_binary, NatsServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transport_reads_the_version_the_server_binary_reports() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let binary = server_binary().expect("the server that just started");
    let reported = ServerVersion::parse(&binary.version)
        .unwrap_or_else(|| panic!("`--version` of the binary: {:?}", binary.version));

    assert_eq!(nats.server_version(), Some(reported));

    let level = nats.api_level().await.expect("JetStream answers");
    if reported < ServerVersion::new(2, 11, 0) {
        assert_eq!(level, 0, "servers before 2.11 report no API level");
    } else {
        assert!(level >= 1, "{reported} reports API level {level}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feature_newer_than_the_server_is_refused_with_both_versions_named() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let version = nats.server_version().expect("a version");

    for feature in [
        ServerFeature::MultipleFilterSubjects,
        ServerFeature::Metadata,
        ServerFeature::PriorityGroups,
        ServerFeature::AtomicBatchPublish,
    ] {
        match nats.require(feature) {
            Ok(()) => assert!(version >= feature.since(), "{feature} allowed on {version}"),
            Err(Error::ServerTooOld(too_old)) => {
                assert!(version < feature.since(), "{feature} refused on {version}");
                assert_eq!(too_old.server, version);
                let message = too_old.to_string();
                assert!(message.contains(&version.to_string()), "{message}");
                assert!(message.contains(&feature.since().to_string()), "{message}");
            }
            Err(other) => panic!("{feature}: unexpected error {other}"),
        }
    }
}
