//! Waiting for a condition without fixed sleeps.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often [`eventually`] checks its condition.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `condition` until it is true or `deadline` has passed; returns its
/// last answer. Assert on the result with a message saying what was seen.
pub async fn eventually<F, Fut>(deadline: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A full round trip through the server on `client`'s connection.
///
/// `client.flush()` returns once the bytes have left the client, not once the
/// server has processed them: a subscription made just before may still be
/// unknown to the server, and a message published from another connection
/// would then be missed. The server handles one connection's commands in
/// order, so once a message sent to a fresh inbox comes back on this
/// connection, every earlier `SUB` of this connection is in effect.
pub async fn round_trip(client: &async_nats::Client) -> Result<(), async_nats::Error> {
    use futures::StreamExt;

    let inbox = client.new_inbox();
    let mut echo = client.subscribe(inbox.clone()).await?;
    client.publish(inbox, "ping".into()).await?;
    client.flush().await?;
    match tokio::time::timeout(Duration::from_secs(10), echo.next()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err("round trip: the echo subscription closed".into()),
        Err(_) => Err("round trip: no echo from the server within 10s".into()),
    }
}
