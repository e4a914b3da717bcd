//! The client state machine: disconnected → connected → registered, and
//! closing → closed. It registers with the server, keeps the registration
//! alive with pings, and registers again on its own when it is lost.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use prost::Message as _;
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::proto::{CloseRequest, CloseResponse, Ping, PingResponse};
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

    /// The current registration, waiting up to `wait` for one.
    pub(crate) async fn session(&self, wait: Duration) -> Option<Arc<Session>> {
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
                    tracing::warn!(client_id = %self.options.client_id, error = %err, retry_in = ?backoff, "cannot register with the NATS Streaming server");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            backoff = BACKOFF_MIN;
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

/// Pings the server as the connect response asked; returns why the
/// registration counts as lost: too many pings without answer, or an error
/// answer ("client replaced", "not registered").
///
/// A ping counts as missed only when it was sent and no answer came before
/// the next one is due. The next ping is due one interval after the last was
/// sent, never earlier: after a pause of the process (SIGSTOP, a stalled VM)
/// the timer fires once, not once per interval missed, so a pause costs at
/// most one missed ping, as in the reference client.
async fn keep_alive(
    nats: &async_nats::Client,
    session: &Session,
    mut answers: async_nats::Subscriber,
) -> String {
    let Some(interval) = session.pings.interval else {
        session.lost.cancelled().await;
        return "registration ended".to_owned();
    };
    let ping = Ping {
        conn_id: session.conn_id.to_vec(),
    }
    .encode_to_vec();
    let inbox = session.pings.inbox.clone();
    let mut pings = PingCount::new(session.pings.max_out);
    let next = tokio::time::sleep(interval);
    tokio::pin!(next);
    loop {
        tokio::select! {
            _ = session.lost.cancelled() => return "registration ended".to_owned(),
            () = &mut next => {
                if let Some(missed) = pings.due() {
                    return format!("{missed} pings without answer");
                }
                if let Err(err) = nats.publish_with_reply(session.pings.subject.clone(), inbox.clone(), ping.clone().into()).await {
                    tracing::debug!(error = %err, "could not send a ping");
                }
                next.as_mut().reset(tokio::time::Instant::now() + interval);
            }
            answer = answers.next() => {
                let Some(answer) = answer else { return "ping inbox closed".to_owned() };
                if answer.status.is_some_and(|s| s == async_nats::StatusCode::NO_RESPONDERS) {
                    continue;
                }
                if !answer.payload.is_empty() {
                    match PingResponse::decode(answer.payload.as_ref()) {
                        Ok(response) if !response.error.is_empty() => return response.error,
                        Ok(_) => {}
                        Err(_) => continue,
                    }
                }
                pings.answered();
            }
        }
    }
}

/// Pings sent and not answered: the connection counts as lost when the
/// `max_out`-th unanswered ping is followed by no answer either.
#[derive(Debug)]
struct PingCount {
    max_out: u32,
    /// Pings in a row that got no answer before the next was due.
    missed: u32,
    /// Whether the last ping sent is still waiting for its answer.
    waiting: bool,
}

impl PingCount {
    fn new(max_out: u32) -> Self {
        Self {
            max_out,
            missed: 0,
            waiting: false,
        }
    }

    /// The next ping is due: `Some(missed)` when the connection counts as
    /// lost, else the ping may go out.
    fn due(&mut self) -> Option<u32> {
        if self.waiting {
            self.missed += 1;
            if self.missed >= self.max_out {
                return Some(self.missed);
            }
        }
        self.waiting = true;
        None
    }

    /// An answer came: every ping so far counts as answered.
    fn answered(&mut self) {
        self.missed = 0;
        self.waiting = false;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::PingCount;

    #[test]
    fn only_a_ping_sent_and_not_answered_counts_as_missed() {
        let mut pings = PingCount::new(3);
        assert_eq!(pings.due(), None, "the first ping goes out");
        pings.answered();
        assert_eq!(pings.due(), None);
        assert_eq!(pings.due(), None, "one missed");
        assert_eq!(pings.due(), None, "two missed");
        assert_eq!(pings.due(), Some(3), "three missed: lost");
        let mut pings = PingCount::new(3);
        assert_eq!(pings.due(), None);
        assert_eq!(pings.due(), None);
        pings.answered();
        assert_eq!(pings.due(), None, "an answer starts the count again");
        assert_eq!(pings.due(), None);
        assert_eq!(pings.due(), None);
        assert_eq!(pings.due(), Some(3));
    }
}
