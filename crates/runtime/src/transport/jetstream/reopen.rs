//! What makes a JetStream subscription reopen its pull at once instead of
//! waiting for two missed heartbeats: the client connected again (its pull
//! request may have died with the server it was on), or the consumer got a
//! new leader (pull requests are not replicated: they die with the old one).
//!
//! Both are watched beside the pull stream, so resuming after a failover
//! costs one round trip once the cluster can serve again, not the 10 s a
//! missed heartbeat takes to notice.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;

/// How often the client's connect count is read.
const RECONNECT_CHECK_EVERY: Duration = Duration::from_millis(100);

/// Why a subscription reopens its pull early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The client connected to a server again.
    Reconnected,
    /// The consumer's leader changed.
    LeaderElected,
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cause::Reconnected => "the client connected again",
            Cause::LeaderElected => "the consumer has a new leader",
        })
    }
}

#[derive(Debug, Default)]
struct Shared {
    notify: Notify,
    cause: Mutex<Option<Cause>>,
}

impl Shared {
    fn fire(&self, cause: Cause) {
        if let Ok(mut last) = self.cause.lock() {
            *last = Some(cause);
        }
        self.notify.notify_one();
    }
}

/// Fires when a subscription should reopen its pull now; stops watching
/// when dropped.
#[derive(Debug)]
pub(crate) struct ReopenTrigger {
    shared: Arc<Shared>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for ReopenTrigger {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl ReopenTrigger {
    /// Watches `client`'s connects and the leader elections of the consumers
    /// of `stream`, of which the one named in `consumer` (its current name:
    /// an ephemeral's changes when it is recreated) counts.
    ///
    /// Where the client may not subscribe to advisories, only reconnects are
    /// watched; the heartbeat still notices a dead pull.
    pub(crate) async fn watch(
        client: async_nats::Client,
        stream: &str,
        consumer: Arc<Mutex<String>>,
    ) -> Self {
        let shared = Arc::new(Shared::default());
        let subject = format!("$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.{stream}.*");
        let elections = match client.subscribe(subject).await {
            Ok(elections) => Some(elections),
            Err(err) => {
                tracing::debug!(stream, error = %err, "cannot watch the consumer's leader elections");
                None
            }
        };
        let watcher = tokio::spawn(watch(client, elections, consumer, shared.clone()));
        Self { shared, watcher }
    }

    /// Waits until the trigger fires; returns why (the latest cause, where
    /// several came together).
    pub(crate) async fn fired(&self) -> Cause {
        self.shared.notify.notified().await;
        self.shared
            .cause
            .lock()
            .ok()
            .and_then(|mut cause| cause.take())
            .unwrap_or(Cause::Reconnected)
    }
}

async fn watch(
    client: async_nats::Client,
    mut elections: Option<async_nats::Subscriber>,
    consumer: Arc<Mutex<String>>,
    shared: Arc<Shared>,
) {
    let statistics = client.statistics();
    let connects = || {
        statistics
            .connects
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let mut seen = connects();
    let mut ticks = tokio::time::interval(RECONNECT_CHECK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                let now = connects();
                if now != seen {
                    seen = now;
                    shared.fire(Cause::Reconnected);
                }
            }
            election = next_election(&mut elections) => match election {
                Some(subject) => {
                    let ours = consumer
                        .lock()
                        .map(|name| subject.rsplit('.').next() == Some(name.as_str()))
                        .unwrap_or(false);
                    if ours {
                        shared.fire(Cause::LeaderElected);
                    }
                }
                None => elections = None,
            },
        }
    }
}

/// The subject of the next leader-elected advisory; never, when not watched.
async fn next_election(elections: &mut Option<async_nats::Subscriber>) -> Option<String> {
    match elections {
        Some(elections) => elections
            .next()
            .await
            .map(|advisory| advisory.subject.to_string()),
        None => std::future::pending().await,
    }
}
