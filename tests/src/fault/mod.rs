//! Fault injection for end-to-end tests: a TCP proxy that freezes, delays,
//! cuts and refuses client connections ([`FaultProxy`]), a JetStream cluster
//! whose nodes can be killed and restarted ([`NatsCluster`]), and broker-side
//! faults (a consumer deleted under a subscriber, a full stream, a purge).

mod broker_faults;
mod cluster;
mod proxy;

pub use broker_faults::{delete_consumer, full_stream, purge_stream, stream_of};
pub use cluster::NatsCluster;
pub use proxy::{Direction, FaultProxy, Upstream};
