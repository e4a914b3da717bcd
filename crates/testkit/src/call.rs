//! Calling one subscriber with one event, through its real stack, and
//! reading how the runtime settled it.

use bytes::Bytes;
use flowgate::{App, Event, OutgoingMessage, StartPosition, Subscriber, Transport};

use crate::{InMemory, Outcome};

/// Delivers `event` once to `subscriber` and returns how the message was
/// settled: the subscriber's own layers, decoding, the handler and the
/// runtime's outcome-to-settlement rules all run, as in production.
///
/// The event goes to a fresh broker, on the subscriber's channel, as the
/// first delivery (`delivery_count() == 1`), and the subscriber starts from
/// it whatever its `start`. The first settlement that is not
/// [`InProgress`](Outcome::InProgress) is returned: [`Outcome::Acked`] for
/// `Ok`; for a failure, whatever the runtime's failure path decides after
/// its in-process retries: [`Outcome::Nakked`] with the retry delay, or
/// [`Outcome::DeadLettered`] once the message is dead-lettered (a permanent
/// failure, a spent failure budget, a payload that does not decode).
///
/// A handler that never returns makes `call` wait forever: bound it with
/// [`tokio::time::timeout`] when that can happen.
///
/// # Panics
///
/// When the subscriber cannot start (an invalid setting, a state its
/// extractors need and were not given) or the event does not encode.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// use std::time::Duration;
/// use flowgate::Failure;
/// use flowgate_testkit::{call, Outcome};
///
/// #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
/// #[event(channel = "orders.placed")]
/// struct OrderPlaced {
///     id: u64,
///     total_cents: i64,
/// }
///
/// #[flowgate::subscriber(durable = "billing")]
/// async fn bill(order: OrderPlaced) -> Result<(), Failure> {
///     match order.total_cents {
///         ..0 => Err(Failure::permanent("negative total")),
///         0 => Err(Failure::retry_after(Duration::from_secs(60), "not priced yet")),
///         _ => Ok(()),
///     }
/// }
///
/// let order = |total_cents| OrderPlaced { id: 7, total_cents };
/// assert_eq!(call(bill::subscriber(), &order(1250)).await, Outcome::Acked);
/// assert_eq!(
///     call(bill::subscriber(), &order(0)).await,
///     Outcome::Nakked { delay: Some(Duration::from_secs(60)) },
/// );
/// // Dead-lettered (published on `dlq.orders.placed`), then terminated.
/// assert_eq!(call(bill::subscriber(), &order(-1)).await, Outcome::DeadLettered);
/// # }
/// ```
pub fn call<E: Event>(subscriber: Subscriber, event: &E) -> Call {
    let payload = event.encode().unwrap_or_else(|e| panic!("{e}"));
    call_payload(subscriber, payload)
}

/// Like [`call`], with raw payload bytes: for what a handler does with a
/// payload that does not decode (dead-lettered and terminated at once).
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// # #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
/// # #[event(channel = "orders.placed")]
/// # struct OrderPlaced { id: u64 }
/// #[flowgate::subscriber]
/// async fn bill(order: OrderPlaced) -> Result<(), std::io::Error> {
///     Ok(())
/// }
///
/// let outcome = flowgate_testkit::call_payload(bill::subscriber(), "not json").await;
/// assert_eq!(outcome, flowgate_testkit::Outcome::DeadLettered);
/// # }
/// ```
pub fn call_payload(subscriber: Subscriber, payload: impl Into<Bytes>) -> Call {
    Call {
        subscriber,
        payload: payload.into(),
        app: App::new(),
        broker: None,
        subject: None,
    }
}

/// One delivery to one subscriber, made by awaiting it: what [`call`] and
/// [`call_payload`] return. Give it the state the handler's extractors
/// need, and the broker to deliver on, before awaiting it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// use std::sync::{Arc, Mutex};
/// use flowgate::extract::{Publisher, State};
/// use flowgate_testkit::{call, InMemory, Outcome};
///
/// #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
/// #[event(channel = "orders.placed")]
/// struct OrderPlaced { id: u64 }
///
/// #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
/// #[event(channel = "invoices.issued")]
/// struct InvoiceIssued { order_id: u64 }
///
/// /// A fake of the database the real app is given.
/// #[derive(Clone, Default)]
/// struct Db(Arc<Mutex<Vec<u64>>>);
///
/// #[flowgate::subscriber(durable = "billing")]
/// async fn bill(
///     order: OrderPlaced,
///     State(db): State<Db>,
///     invoices: Publisher<InvoiceIssued>,
/// ) -> Result<(), flowgate::BoxError> {
///     db.0.lock().unwrap().push(order.id);
///     invoices.publish(&InvoiceIssued { order_id: order.id }).await?;
///     Ok(())
/// }
///
/// let db = Db::default();
/// let broker = InMemory::new();
/// let outcome = call(bill::subscriber(), &OrderPlaced { id: 7 })
///     .state(db.clone())
///     .on(&broker)
///     .await;
/// assert_eq!(outcome, Outcome::Acked);
/// assert_eq!(*db.0.lock().unwrap(), [7]);
/// assert_eq!(broker.channel_messages("invoices.issued").len(), 1);
/// # }
/// ```
#[must_use = "a call does nothing until it is awaited"]
pub struct Call {
    subscriber: Subscriber,
    payload: Bytes,
    /// Carries the state.
    app: App,
    broker: Option<InMemory>,
    /// Where the event is published; the subscriber's channel by default.
    subject: Option<String>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("subscriber", &self.subscriber.name())
            .field("payload_len", &self.payload.len())
            .finish_non_exhaustive()
    }
}

impl Call {
    /// Gives the handler `value`, as [`App::state`] does.
    pub fn state<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.app = self.app.state(value);
        self
    }

    /// Delivers on `broker` instead of a fresh one, so the test can read
    /// what the handler published there afterwards.
    pub fn on(mut self, broker: &InMemory) -> Self {
        self.broker = Some(broker.clone());
        self
    }

    /// Publishes the event on `subject` instead of the subscriber's channel:
    /// needed for a subscriber of a wildcard channel (`orders.*`), whose
    /// handler then sees `subject` as the message's subject.
    ///
    /// # Panics
    ///
    /// When awaited, if `subject` is not a concrete subject the subscriber's
    /// channel matches.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    async fn run(self) -> Outcome {
        let Call {
            subscriber,
            payload,
            app,
            broker,
            subject,
        } = self;
        let channel = subscriber.spec().channel.clone();
        let subject = match subject {
            Some(subject) if flowgate::subject_matches(&channel, &subject) => subject,
            Some(subject) => panic!(
                "`{subject}` is not a subject that `{}`'s channel `{channel}` matches",
                subscriber.name()
            ),
            None if flowgate::is_pattern(&channel) => panic!(
                "`{}` subscribes to the wildcard channel `{channel}`: give call a concrete subject to publish on, with .subject(\"...\")",
                subscriber.name()
            ),
            None => channel,
        };
        let broker = broker.unwrap_or_default();
        deliver(app, subscriber, subject, payload, broker).await
    }
}

impl std::future::IntoFuture for Call {
    type Output = Outcome;
    type IntoFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

async fn deliver(
    app: App,
    subscriber: Subscriber,
    subject: String,
    payload: Bytes,
    broker: InMemory,
) -> Outcome {
    let channel = subscriber.spec().channel.clone();
    let name = subscriber.name().to_owned();
    let app = app
        .subscriber(subscriber.start(StartPosition::All))
        .shutdown_timeout(std::time::Duration::ZERO)
        .start(broker.clone())
        .await
        .unwrap_or_else(|e| panic!("subscriber `{name}` does not start: {e}"));
    let sequence = match broker.publish(OutgoingMessage::new(subject, payload)).await {
        Ok(receipt) => match receipt.await {
            Ok(receipt) => receipt.sequence,
            Err(e) => panic!("{e}"),
        },
        Err(e) => panic!("{e}"),
    };
    let outcome = broker
        .wait_for(|broker| {
            broker
                .settlements(&channel)
                .of(sequence)
                .into_iter()
                .map(|s| s.outcome)
                .find(|o| *o != Outcome::InProgress)
        })
        .await;
    // The outcome is known; a redelivery already running is not waited for.
    let _ = app.shutdown().await;
    outcome
}
