//! The client state machine: disconnected → connected → registered, and
//! closing → closed. It registers with the server, keeps the registration
//! alive with pings, and registers again on its own when it is lost.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::pings::keep_alive;
use super::proto::{CloseRequest, CloseResponse};
use super::session::{register, Session};
use super::{StanError, StanOptions};

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Where the client is in its life.
///
/// ```
/// assert_ne!(flowgate::transport::stan::StanState::Registered, flowgate::transport::stan::StanState::Closed);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StanState {
    /// The NATS connection is down.
    Disconnected,
    /// NATS is up; the client is not (or no longer) registered with the streaming server.
    Connected,
    /// Registered: publishing and subscribing work.
    Registered,
    /// Closing: subscriptions end, then the close request goes out.
    Closing,
    /// Closed for good.
    Closed,
}

#[derive(Debug, Clone)]
pub(crate) struct Phase {
    pub(crate) state: StanState,
    pub(crate) session: Option<Arc<Session>>,
    pub(crate) registrations: u64,
    /// Why the client closed by itself (it was replaced), if it did.
    pub(crate) ended: Option<StanError>,
}

/// A subscription driver the client ends on close: its end signal and the
/// token it cancels when it has finished.
pub(crate) type Ending = (CancellationToken, CancellationToken);

/// The shared state of one NATS Streaming client.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) nats: async_nats::Client,
    pub(crate) options: StanOptions,
    pub(crate) pub_ack_slots: Arc<Semaphore>,
    phase: watch::Sender<Phase>,
    shutdown: CancellationToken,
    subscriptions: Mutex<Vec<Ending>>,
    driver: Mutex<Option<JoinHandle<()>>>,
}

impl Client {
    /// Starts the state machine and returns once the first registration
    /// succeeded, or with its error.
    pub(crate) async fn start(
        nats: async_nats::Client,
        options: StanOptions,
    ) -> Result<Arc<Self>, StanError> {
        options.validate()?;
        let (phase, _) = watch::channel(Phase {
            state: StanState::Connected,
            session: None,
            registrations: 0,
            ended: None,
        });
        let client = Arc::new(Self {
            nats,
            pub_ack_slots: Arc::new(Semaphore::new(options.max_pub_acks_in_flight)),
            options,
            phase,
            shutdown: CancellationToken::new(),
            subscriptions: Mutex::default(),
            driver: Mutex::default(),
        });
        let (first_tx, first_rx) = oneshot::channel();
        let driver = tokio::spawn(client.clone().drive(first_tx));
        *lock(&client.driver) = Some(driver);
        match first_rx.await {
            Ok(Ok(())) => Ok(client),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(StanError::NotRegistered),
        }
    }

    pub(crate) fn phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    pub(crate) fn state(&self) -> StanState {
        self.phase.borrow().state
    }

    pub(crate) fn registrations(&self) -> u64 {
        self.phase.borrow().registrations
    }

    /// Why the client closed by itself, if it did.
    pub(crate) fn ended(&self) -> Option<StanError> {
        self.phase.borrow().ended.clone()
    }

    /// Waits until the client is closed; returns why when it closed by
    /// itself, `None` after [`close`](Self::close).
    pub(crate) async fn closed(&self) -> Option<StanError> {
        let mut phase = self.phase();
        let closed = phase.wait_for(|p| p.state == StanState::Closed).await;
        closed.ok().and_then(|p| p.ended.clone())
    }

    /// The current registration, waiting up to `wait` for one.
    pub(crate) async fn session(&self, wait: Duration) -> Option<Arc<Session>> {
        // The common case, registered: no receiver and no timer to set up.
        {
            let phase = self.phase.borrow();
            if let (Some(session), false) = (&phase.session, phase.state == StanState::Closed) {
                return Some(session.clone());
            }
        }
        let mut phase = self.phase();
        let ready = phase.wait_for(|p| {
            p.session.is_some() || matches!(p.state, StanState::Closing | StanState::Closed)
        });
        let session = match tokio::time::timeout(wait, ready).await {
            Ok(Ok(phase)) if phase.state != StanState::Closed => phase.session.clone(),
            _ => None,
        };
        session
    }

    /// Waits for the next registration; `None` once the client closes.
    pub(crate) async fn next_session(&self) -> Option<Arc<Session>> {
        let mut phase = self.phase();
        let phase = phase
            .wait_for(|p| {
                p.session.as_ref().is_some_and(|s| !s.lost.is_cancelled())
                    || matches!(p.state, StanState::Closing | StanState::Closed)
            })
            .await
            .ok()?;
        match phase.state {
            StanState::Closing | StanState::Closed => None,
            _ => phase.session.clone(),
        }
    }

    pub(crate) fn track(&self, ending: Ending) {
        let mut subscriptions = lock(&self.subscriptions);
        subscriptions.retain(|(_, finished)| !finished.is_cancelled());
        subscriptions.push(ending);
    }

    fn set(&self, state: StanState, session: Option<Arc<Session>>) {
        self.phase.send_modify(|phase| {
            if state == StanState::Registered {
                phase.registrations += 1;
            }
            phase.state = state;
            phase.session = session;
        });
    }

    fn nats_state(&self) -> StanState {
        match self.nats.connection_state() {
            async_nats::connection::State::Connected => StanState::Connected,
            _ => StanState::Disconnected,
        }
    }

    /// Ends every subscription (close or unsubscribe, as configured), sends
    /// the close request and stops the state machine.
    pub(crate) async fn close(&self) -> Result<(), StanError> {
        let session = self.phase.borrow().session.clone();
        self.phase
            .send_modify(|phase| phase.state = StanState::Closing);
        let endings = std::mem::take(&mut *lock(&self.subscriptions));
        for (end, _) in &endings {
            end.cancel();
        }
        let wait = self.options.connect_wait * 2;
        for (_, finished) in endings {
            let _ = tokio::time::timeout(wait, finished.cancelled()).await;
        }
        self.shutdown.cancel();
        let driver = lock(&self.driver).take();
        if let Some(driver) = driver {
            let _ = driver.await;
        }
        let result = match session {
            Some(session) if !session.lost.is_cancelled() => self.send_close(&session).await,
            _ => Ok(()),
        };
        if let Some(session) = self.phase.borrow().session.clone() {
            session.lost.cancel();
        }
        self.set(StanState::Closed, None);
        result
    }

    async fn send_close(&self, session: &Session) -> Result<(), StanError> {
        let request = CloseRequest {
            client_id: self.options.client_id.clone(),
        };
        let reply = tokio::time::timeout(
            self.options.connect_wait,
            self.nats.request(
                session.close_requests.clone(),
                request.encode_to_vec().into(),
            ),
        )
        .await;
        let failed = |reason: String| StanError::Request {
            what: "the close request",
            reason,
        };
        let reply = match reply {
            Ok(Ok(reply)) => reply,
            Ok(Err(err)) => return Err(failed(err.to_string())),
            Err(_) => return Err(failed("no answer".to_owned())),
        };
        let response =
            CloseResponse::decode(reply.payload.as_ref()).map_err(|e| failed(e.to_string()))?;
        if response.error.is_empty() {
            Ok(())
        } else {
            Err(failed(response.error))
        }
    }

    /// The state machine. Reports the first registration's outcome on `first`.
    async fn drive(self: Arc<Self>, first: oneshot::Sender<Result<(), StanError>>) {
        let mut first = Some(first);
        let mut backoff = BACKOFF_MIN;
        let mut refused_in_a_row = 0_u32;
        while !self.shutdown.is_cancelled() {
            self.set(self.nats_state(), None);
            let registered = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                registered = register(&self.nats, &self.options) => registered,
            };
            let (session, ping_answers) = match registered {
                Ok(registered) => registered,
                Err(err) => {
                    if let Some(first) = first.take() {
                        let _ = first.send(Err(err));
                        self.set(StanState::Closed, None);
                        return;
                    }
                    if err.is_id_in_use() {
                        if !self.options.keep_retrying_when_replaced {
                            self.replaced();
                            return;
                        }
                        refused_in_a_row += 1;
                    }
                    if refused_in_a_row <= 1 {
                        tracing::warn!(client_id = %self.options.client_id, error = %err, retry_in = ?backoff, "cannot register with the NATS Streaming server");
                    } else {
                        tracing::debug!(client_id = %self.options.client_id, error = %err, retry_in = ?backoff, "the client id is still held by another client");
                    }
                    tokio::select! {
                        _ = self.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            backoff = BACKOFF_MIN;
            refused_in_a_row = 0;
            self.set(StanState::Registered, Some(session.clone()));
            if let Some(first) = first.take() {
                let _ = first.send(Ok(()));
            } else {
                tracing::info!(client_id = %self.options.client_id, "registered again with the NATS Streaming server");
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                reason = keep_alive(&self.nats, &session, ping_answers) => {
                    tracing::warn!(client_id = %self.options.client_id, reason = %reason, "connection to the NATS Streaming server lost; registering again");
                    session.lost.cancel();
                }
            }
        }
    }
}

impl Client {
    /// Another live client holds the id: closes for good with
    /// [`StanError::Replaced`]; subscriptions end, publishes fail with it.
    fn replaced(&self) {
        let err = StanError::Replaced {
            client_id: self.options.client_id.clone(),
        };
        tracing::error!(client_id = %self.options.client_id, error = %err, "NATS Streaming client closed");
        self.phase.send_modify(|phase| {
            phase.state = StanState::Closed;
            phase.session = None;
            phase.ended = Some(err);
        });
    }

    /// Stops the state machine without a goodbye: the driver ends, the
    /// heartbeat inbox goes away, and the server forgets the client after its
    /// missed heartbeats (or at once when another client asks for its id).
    pub(crate) fn abandon(&self) {
        self.shutdown.cancel();
        let session = self.phase.borrow().session.clone();
        if let Some(session) = session {
            session.lost.cancel();
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
