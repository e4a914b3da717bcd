//! What a transport provides to the suite, and the harnesses of the
//! transports flowgate has.

use std::future::Future;

use flowgate_testkit::InMemory;

use crate::NatsServer;

/// A broker the suite can open connections to.
pub trait Harness: Send + Sync {
    /// The transport under test.
    type T: flowgate::Transport;

    /// A new, independent connection to the broker (for a queue group's
    /// second member, or an app restarted on a fresh client).
    fn connect(&self) -> impl Future<Output = Self::T> + Send;
}

/// The in-memory broker of `flowgate-testkit`: every connection is a handle
/// on the same broker.
#[derive(Debug, Clone, Default)]
pub struct Memory(InMemory);

impl Memory {
    /// A fresh broker.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Harness for Memory {
    type T = InMemory;

    async fn connect(&self) -> InMemory {
        self.0.clone()
    }
}

/// JetStream on a real `nats-server` of the test's own.
#[derive(Debug)]
pub struct JetStreamHarness(NatsServer);

impl JetStreamHarness {
    /// Starts a server.
    pub async fn start() -> Self {
        Self(NatsServer::start().await)
    }
}

impl Harness for JetStreamHarness {
    type T = flowgate::JetStream;

    async fn connect(&self) -> flowgate::JetStream {
        self.0.jetstream().await
    }
}
