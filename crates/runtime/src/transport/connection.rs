//! Whether a transport's connection to its broker is up, for health checks.

/// The state of a transport's connection to its broker, as
/// [`Transport::connection`](crate::Transport::connection) reports it.
///
/// ```
/// use flowgate::ConnectionState;
///
/// assert!(ConnectionState::Connected.is_up());
/// assert!(ConnectionState::Unknown.is_up(), "a transport that cannot tell is not held down");
/// assert!(!ConnectionState::Disconnected.is_up());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Connected: subscriptions receive and settlements reach the broker.
    Connected,
    /// Not connected (never yet, or lost and reconnecting): nothing is
    /// delivered, and acks and publishes fail until the client reconnects.
    Disconnected,
    /// The transport cannot tell.
    Unknown,
}

impl ConnectionState {
    /// Whether the connection counts as up for readiness: connected, or a
    /// transport that cannot tell.
    pub fn is_up(self) -> bool {
        !matches!(self, ConnectionState::Disconnected)
    }

    /// The state of an async-nats client's connection.
    pub(crate) fn of_nats(client: &async_nats::Client) -> Self {
        match client.connection_state() {
            async_nats::connection::State::Connected => ConnectionState::Connected,
            _ => ConnectionState::Disconnected,
        }
    }
}

impl std::fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConnectionState::Connected => "connected",
            ConnectionState::Disconnected => "disconnected",
            ConnectionState::Unknown => "unknown",
        })
    }
}
