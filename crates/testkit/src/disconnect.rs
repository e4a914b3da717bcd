//! A lost connection between the client and the broker, for tests of what
//! an app does meanwhile and of its health endpoints.

use crate::InMemory;

impl InMemory {
    /// Drops the client's connection to the broker, as when the network or
    /// the server goes away: until [`reconnect`](Self::reconnect),
    /// [`Transport::connection`](flowgate::Transport::connection) says
    /// `Disconnected`, nothing is delivered (what the client had buffered
    /// is still handed out), publishes and settlements fail unapplied (the
    /// messages come again after their ack wait), attempt-store calls never
    /// answer, and consumer-info probes fail. The broker's own timers run
    /// on: ack waits end meanwhile. Noted once as
    /// [`Fault::Disconnected`](crate::Fault::Disconnected).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// use flowgate::{App, ConnectionState};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
    /// #[event(channel = "orders.placed")]
    /// struct OrderPlaced { id: u64 }
    ///
    /// #[flowgate::subscriber(durable = "billing", start = "all")]
    /// async fn bill(_: OrderPlaced) -> Result<(), std::io::Error> {
    ///     Ok(())
    /// }
    ///
    /// let broker = flowgate_testkit::InMemory::new();
    /// let app = App::new().subscriber(bill::subscriber()).start(broker.clone()).await.unwrap();
    /// assert!(app.health().is_ready());
    ///
    /// broker.disconnect();
    /// assert_eq!(app.health().connection, ConnectionState::Disconnected);
    /// assert!(!app.health().is_ready());
    /// assert!(broker.publish_event(&OrderPlaced { id: 1 }).await.is_err());
    ///
    /// broker.reconnect();
    /// assert!(app.health().is_ready());
    /// broker.publish_event(&OrderPlaced { id: 2 }).await.unwrap();
    /// broker.wait_idle().await;
    /// assert_eq!(broker.settlements("orders.placed").acked().len(), 1, "only the second was stored");
    /// app.shutdown().await.unwrap();
    /// # }
    /// ```
    pub fn disconnect(&self) {
        self.broker.set_connected(false);
    }

    /// Restores the connection [`disconnect`](Self::disconnect) dropped:
    /// subscriptions pull again, and what expired meanwhile is redelivered.
    pub fn reconnect(&self) {
        self.broker.set_connected(true);
    }

    /// Whether the client is connected (not [`disconnect`](Self::disconnect)ed).
    pub fn is_connected(&self) -> bool {
        self.broker.is_connected()
    }
}
