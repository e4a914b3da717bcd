//! [`Subscriber`]: a handler with its subscription settings.

use std::time::Duration;

use std::sync::Arc;

use tower::util::BoxCloneSyncService;

use crate::asyncapi::EventSchema;
use crate::dead_letter::DeadLetter;
use crate::extract::Params;
use crate::handler::{Handler, HandlerService};
use crate::middleware::retry::RetryPolicy;
use crate::{AckMode, BoxError, Request, StartPosition, SubscriptionSpec};

/// The type-erased service every subscriber's stack is made into.
pub type BoxHandlerService = BoxCloneSyncService<Request, (), BoxError>;

/// A tower layer over [`BoxHandlerService`], type-erased.
pub(crate) type LayerFn = Arc<dyn Fn(BoxHandlerService) -> BoxHandlerService + Send + Sync>;

/// Type-erases `layer`.
pub(crate) fn layer_fn<L>(layer: L) -> LayerFn
where
    L: tower::Layer<BoxHandlerService> + Send + Sync + 'static,
    L::Service:
        tower::Service<Request, Response = (), Error = BoxError> + Clone + Send + Sync + 'static,
    <L::Service as tower::Service<Request>>::Future: Send + 'static,
{
    Arc::new(move |inner| BoxCloneSyncService::new(layer.layer(inner)))
}

/// The user's tower layers of a subscriber or an app, by where they sit.
#[derive(Clone, Default)]
pub(crate) struct Layers {
    /// Around the whole delivery, outside flowgate's retry: they see a
    /// message once, however many attempts it takes.
    pub(crate) delivery: Vec<LayerFn>,
    /// Around each attempt, inside flowgate's retry and outside its timeout.
    pub(crate) attempt: Vec<LayerFn>,
}

/// What happens when a handler fails: retries, timeout, dead letters.
#[derive(Debug, Clone, Default)]
pub(crate) struct FailurePolicy {
    pub(crate) retry: RetryPolicy,
    pub(crate) timeout: Option<Duration>,
    pub(crate) dead_letter: DeadLetter,
}

/// A handler together with what it subscribes to.
///
/// `#[flowgate::subscriber]` makes one for each annotated fn, reachable as
/// `<fn name>::subscriber()`; you can also build one by hand.
///
/// ```
/// # #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
/// # #[event(channel = "orders.placed")]
/// # struct OrderPlaced { id: u64 }
/// async fn bill(order: OrderPlaced) -> Result<(), std::io::Error> { Ok(()) }
///
/// let sub = flowgate::Subscriber::new("orders.placed", bill)
///     .durable("billing")
///     .max_in_flight(32);
/// assert_eq!(sub.spec().max_in_flight, 32);
/// ```
#[derive(Clone)]
pub struct Subscriber {
    name: String,
    spec: SubscriptionSpec,
    handler: HandlerService,
    failure: FailurePolicy,
    layers: Layers,
    /// What the AsyncAPI document says of the payload's type.
    payload: Option<fn() -> EventSchema>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("name", &self.name)
            .field("spec", &self.spec)
            .field("failure", &self.failure)
            .field("layers", &self.layers.delivery.len())
            .field("attempt_layers", &self.layers.attempt.len())
            .finish_non_exhaustive()
    }
}

impl Subscriber {
    /// A subscriber of `channel` calling `handler`, all settings at their defaults.
    pub fn new<P, H>(channel: impl Into<String>, handler: H) -> Self
    where
        H: Handler<P>,
        P: Params,
    {
        Self {
            name: std::any::type_name::<H>().to_owned(),
            spec: SubscriptionSpec::new(channel),
            handler: HandlerService::new(handler),
            failure: FailurePolicy::default(),
            layers: Layers::default(),
            payload: P::SCHEMA,
        }
    }

    /// Names the subscriber in logs and errors (the fn name, for `#[subscriber]`).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Makes the subscription durable under `name`.
    pub fn durable(mut self, name: impl Into<String>) -> Self {
        self.spec.durable = Some(name.into());
        self
    }

    /// Joins the queue group `name`: members share the work.
    pub fn queue(mut self, name: impl Into<String>) -> Self {
        self.spec.queue = Some(name.into());
        self
    }

    /// Where a new subscription starts.
    pub fn start(mut self, start: StartPosition) -> Self {
        self.spec.start = start;
        self
    }

    /// How long the broker waits for a settlement before redelivering.
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.spec.ack_wait = ack_wait;
        self
    }

    /// The failure budget: the most attempts of one message, in-process
    /// retries and broker redeliveries together. When it is spent the message
    /// goes to the dead letters.
    pub fn max_deliver(mut self, max_deliver: u32) -> Self {
        self.spec.max_deliver = Some(max_deliver);
        self
    }

    /// No failure budget: failing messages are retried until they succeed.
    pub fn unlimited_deliveries(mut self) -> Self {
        self.spec.max_deliver = None;
        self
    }

    /// How failed attempts are retried.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.failure.retry = policy;
        self
    }

    /// Bounds each handler attempt; a timed-out attempt is a retryable failure.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.failure.timeout = Some(timeout);
        self
    }

    /// Where messages go when they cannot be handled.
    pub fn dead_letter(mut self, dead_letter: DeadLetter) -> Self {
        self.failure.dead_letter = dead_letter;
        self
    }

    /// The most handlers running at once.
    pub fn max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.spec.max_in_flight = max_in_flight;
        self
    }

    /// The handler settles messages itself through [`Message`](crate::Message).
    pub fn manual_ack(mut self) -> Self {
        self.spec.ack = AckMode::Manual;
        self
    }

    /// One ack covers every handled message before it
    /// ([`AckMode::Coalesced`]; JetStream and the in-memory broker, not NATS
    /// Streaming).
    pub fn coalesced_acks(mut self) -> Self {
        self.spec.ack = AckMode::Coalesced;
        self
    }

    /// Wraps this subscriber's stack in a tower layer around the whole
    /// delivery: outside flowgate's retry, timeout and metrics, inside the
    /// app's layers. It sees a message once however many attempts it takes,
    /// so a tower `TimeoutLayer` here bounds all the attempts of a delivery
    /// together, in-process retries and their waits included; for a bound
    /// on each attempt, use [`timeout`](Self::timeout) or
    /// [`attempt_layer`](Self::attempt_layer).
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: tower::Layer<BoxHandlerService> + Send + Sync + 'static,
        L::Service: tower::Service<Request, Response = (), Error = BoxError>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as tower::Service<Request>>::Future: Send + 'static,
    {
        self.layers.delivery.push(layer_fn(layer));
        self
    }

    /// Wraps each attempt at a message in a tower layer: inside flowgate's
    /// retry, outside its timeout and metrics (and inside the app's attempt
    /// layers). It runs again for every in-process retry and redelivery,
    /// each time in that attempt's `flowgate.attempt` span; a failure it
    /// returns is the attempt's, retried within the failure budget.
    ///
    /// ```
    /// use std::time::Duration;
    /// # #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
    /// # #[event(channel = "orders.placed")]
    /// # struct OrderPlaced { id: u64 }
    /// async fn bill(order: OrderPlaced) -> Result<(), std::io::Error> { Ok(()) }
    ///
    /// // Each attempt gets 2 s; a slow one is retried, not the whole delivery cut off.
    /// let sub = flowgate::Subscriber::new("orders.placed", bill)
    ///     .attempt_layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(2)));
    /// ```
    pub fn attempt_layer<L>(mut self, layer: L) -> Self
    where
        L: tower::Layer<BoxHandlerService> + Send + Sync + 'static,
        L::Service: tower::Service<Request, Response = (), Error = BoxError>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as tower::Service<Request>>::Future: Send + 'static,
    {
        self.layers.attempt.push(layer_fn(layer));
        self
    }

    /// The subscriber's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The handler, with the parameters it takes.
    pub(crate) fn handler(&self) -> &HandlerService {
        &self.handler
    }

    /// What it subscribes to.
    pub fn spec(&self) -> &SubscriptionSpec {
        &self.spec
    }

    /// The dead-letter subject, if dead letters are on.
    pub fn dead_letter_subject(&self) -> Option<String> {
        self.failure.dead_letter.subject_for(&self.spec.channel)
    }

    /// What the AsyncAPI document ([`App::asyncapi`](crate::App::asyncapi))
    /// says of the handler's payload type; `None` for a handler without one.
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
    /// # #[event(channel = "orders.placed")]
    /// # struct OrderPlaced { id: u64 }
    /// async fn bill(order: OrderPlaced) -> Result<(), std::io::Error> { Ok(()) }
    ///
    /// let sub = flowgate::Subscriber::new("orders.placed", bill);
    /// let schema = sub.payload_schema().expect("a payload");
    /// assert_eq!(schema.name(), "OrderPlaced");
    /// ```
    pub fn payload_schema(&self) -> Option<EventSchema> {
        self.payload.map(|schema| schema())
    }

    pub(crate) fn failure(&self) -> &FailurePolicy {
        &self.failure
    }

    pub(crate) fn into_parts(
        self,
    ) -> (
        String,
        SubscriptionSpec,
        HandlerService,
        FailurePolicy,
        Layers,
    ) {
        (
            self.name,
            self.spec,
            self.handler,
            self.failure,
            self.layers,
        )
    }
}

/// Every `#[subscriber]` linked into the binary registers itself here.
#[doc(hidden)]
#[linkme::distributed_slice]
pub static SUBSCRIBERS: [fn() -> Subscriber];

/// Every subscriber that `#[flowgate::subscriber]` declared in the binary.
pub(crate) fn discovered() -> impl Iterator<Item = Subscriber> {
    SUBSCRIBERS.iter().map(|make| make())
}
