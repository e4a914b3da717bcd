//! A started app: its dispatchers, its drain on shutdown, its health.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::health::HealthProbe;
use crate::in_flight::InFlight;
use crate::lifespan::Hook;
use crate::Error;

pub(crate) type FlushFuture = std::pin::Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

/// One subscription's dispatch loop and its running handlers.
pub(crate) struct Dispatcher {
    pub(crate) task: JoinHandle<()>,
    pub(crate) in_flight: Arc<InFlight>,
}

/// A started [`App`](crate::App). Stop it with [`shutdown`](RunningApp::shutdown); dropping
/// it stops dispatching without waiting, and without running the
/// [`on_shutdown`](crate::App::on_shutdown) hooks (an async hook cannot run in
/// `drop`; a warning is logged when there are any).
pub struct RunningApp {
    pub(crate) stop: CancellationToken,
    pub(crate) abandon: CancellationToken,
    pub(crate) finish: CancellationToken,
    /// Every handler task and dead-letter forwarder of the app.
    pub(crate) tracker: TaskTracker,
    pub(crate) dispatchers: Vec<Dispatcher>,
    pub(crate) flush: Box<dyn Fn() -> FlushFuture + Send + Sync>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) health: HealthProbe,
    /// Run after the drain; taken by `shutdown`.
    pub(crate) on_shutdown: Vec<Hook>,
}

impl std::fmt::Debug for RunningApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningApp")
            .field("subscriptions", &self.dispatchers.len())
            .field("in_flight", &self.in_flight())
            .field("on_shutdown", &self.on_shutdown)
            .finish()
    }
}

impl RunningApp {
    /// Handlers running right now, over all subscribers.
    pub fn in_flight(&self) -> usize {
        self.dispatchers.iter().map(|d| d.in_flight.running()).sum()
    }

    /// The app's [`Health`](crate::Health) now: connected or not, and each
    /// subscription's last delivery, backlog, stalled and failing (see
    /// [`health`](crate::health)). Cheap: asks the broker nothing.
    ///
    /// ```no_run
    /// # async fn demo(app: flowgate::App) -> Result<(), flowgate::Error> {
    /// let nats = flowgate::JetStream::connect("nats://127.0.0.1:4222").await?;
    /// let running = app.start(nats).await?;
    /// let health = running.health();
    /// assert!(health.is_ready(), "not ready: {health}");
    /// # Ok(()) }
    /// ```
    pub fn health(&self) -> crate::Health {
        self.health.health()
    }

    /// A handle that reads [`health`](Self::health) from elsewhere (an HTTP
    /// handler), also while [`shutdown`](Self::shutdown) runs: it then
    /// reports the app draining, so not ready.
    pub fn health_probe(&self) -> HealthProbe {
        self.health.clone()
    }

    /// Stops taking messages and pulling, hands deliveries that were buffered
    /// but never started back to the broker (so they come again at once),
    /// waits up to the shutdown timeout for in-flight handlers to finish and
    /// be settled, and flushes their acks to the broker. Handlers still
    /// running at the deadline are stopped (dropped at their next await):
    /// their messages are redelivered after the ack wait. When this returns,
    /// no handler of the app runs or settles anything any more.
    ///
    /// Then the [`on_shutdown`](crate::App::on_shutdown) hooks run, in registration
    /// order, every one of them even when one fails or panicked. What this
    /// returns: the drain's error ([`Error::ShutdownTimeout`], or a flush's
    /// broker error) when no hook failed; [`Error::ShutdownHooks`] with each
    /// failed hook, and the drain's error first if it had one, when any hook
    /// failed.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        let drained = self.drain().await;
        let hooks = std::mem::take(&mut self.on_shutdown);
        let failures = crate::lifespan::run_shutdown(&hooks).await;
        crate::lifespan::shutdown_result(drained, failures)
    }

    /// The drain of [`shutdown`](Self::shutdown), before its hooks.
    async fn drain(&mut self) -> Result<(), Error> {
        self.stop.cancel();
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        let mut remaining = 0;
        let dispatchers = std::mem::take(&mut self.dispatchers);
        for dispatcher in &dispatchers {
            let drained = tokio::time::timeout_at(deadline, dispatcher.in_flight.drained()).await;
            if drained.is_err() {
                remaining += dispatcher.in_flight.running();
            }
        }
        if remaining > 0 {
            self.abandon.cancel();
        }
        self.tracker.close();
        self.tracker.wait().await;
        self.finish.cancel();
        for dispatcher in dispatchers {
            let _ = dispatcher.task.await;
        }
        (self.flush)().await?;
        if remaining > 0 {
            return Err(Error::ShutdownTimeout {
                remaining,
                deadline: self.shutdown_timeout,
            });
        }
        Ok(())
    }
}

impl Drop for RunningApp {
    fn drop(&mut self) {
        if !self.on_shutdown.is_empty() {
            tracing::warn!(
                hooks = self.on_shutdown.len(),
                "a running app was dropped without shutdown(): its on_shutdown hooks do not run"
            );
        }
        self.stop.cancel();
        self.finish.cancel();
    }
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
