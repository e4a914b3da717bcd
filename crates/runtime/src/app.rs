//! [`App`]: subscribers plus layers, started on a transport.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::attempts::AttemptLedger;
use crate::dispatch::{Lifecycle, SubscriberContext};
use crate::extract::{AppPublisher, StateMap};
use crate::health::{BacklogGauges, HealthPolicy, HealthProbe, Monitor, Observed, Tracked};
use crate::in_flight::InFlight;
use crate::lifespan::Hook;
use crate::middleware::metrics::SubscriberMetrics;
use crate::output::OutputScope;
use crate::running_app::{shutdown_signal, Dispatcher, FlushFuture, RunningApp};
use crate::subscriber::{discovered, layer_fn, BoxHandlerService, Layers};
use crate::{BoxError, Error, Request, Subscriber, SubscriberSettings, Transport};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// An application: a set of subscribers, the layers around them, and how
/// long to wait for in-flight handlers on shutdown.
///
/// ```no_run
/// # #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
/// # #[event(channel = "orders.placed")]
/// # struct OrderPlaced { id: u64 }
/// # #[derive(Debug, thiserror::Error)] #[error("x")] struct BillingError;
/// #[flowgate::subscriber(durable = "billing", max_in_flight = 32)]
/// async fn bill(order: OrderPlaced) -> Result<(), BillingError> {
///     Ok(())
/// }
///
/// # async fn run() -> Result<(), flowgate::Error> {
/// let nats = flowgate::JetStream::connect("nats://127.0.0.1:4222").await?;
/// flowgate::App::new()
///     .subscriber(bill::subscriber()) // or .discover() for every #[subscriber]
///     .run(nats)                      // until SIGINT or SIGTERM, then drains
///     .await
/// # }
/// ```
#[derive(Clone)]
pub struct App {
    subscribers: Vec<Subscriber>,
    layers: Layers,
    shutdown_timeout: Duration,
    /// Overrides by subscriber name, for the subscribers added later too.
    settings: BTreeMap<String, SubscriberSettings>,
    /// What handlers take as `State<T>`.
    state: StateMap,
    /// When subscriptions count as stalled or failing.
    health: HealthPolicy,
    /// Run in order before subscribing.
    on_start: Vec<Hook>,
    /// Run in order after the drain.
    on_shutdown: Vec<Hook>,
}

impl Default for App {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("subscribers", &self.subscribers)
            .field("layers", &self.layers.delivery.len())
            .field("attempt_layers", &self.layers.attempt.len())
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("state", &self.state)
            .field("health", &self.health)
            .field("on_start", &self.on_start)
            .field("on_shutdown", &self.on_shutdown)
            .finish()
    }
}

impl App {
    /// How long shutdown waits for in-flight handlers unless told otherwise.
    pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

    /// An app with no subscribers.
    pub fn new() -> Self {
        Self {
            subscribers: Vec::new(),
            layers: Layers::default(),
            shutdown_timeout: Self::DEFAULT_SHUTDOWN_TIMEOUT,
            settings: BTreeMap::new(),
            state: StateMap::new(),
            health: HealthPolicy::DEFAULT,
            on_start: Vec::new(),
            on_shutdown: Vec::new(),
        }
    }

    /// Gives handlers `value`: a handler parameter `State<T>` receives a
    /// clone of it, for each message. Give each type once (a later value
    /// replaces an earlier one of its type); keep it cheap to clone (a pool
    /// handle, an `Arc`). A handler whose state is missing fails
    /// [`start`](Self::start), naming the handler and the type.
    ///
    /// ```
    /// use flowgate::State;
    /// # #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
    /// # #[event(channel = "orders.placed")]
    /// # struct OrderPlaced { id: u64 }
    ///
    /// #[derive(Clone)]
    /// struct Db(std::sync::Arc<str>);
    ///
    /// #[flowgate::subscriber(durable = "billing")]
    /// async fn bill(order: OrderPlaced, State(db): State<Db>) -> Result<(), std::io::Error> {
    ///     println!("billing order {} in {}", order.id, db.0);
    ///     Ok(())
    /// }
    ///
    /// let app = flowgate::App::new()
    ///     .state(Db("postgres://billing".into()))
    ///     .subscriber(bill::subscriber());
    /// ```
    pub fn state<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(value);
        self
    }

    /// Adds one subscriber.
    pub fn subscriber(mut self, subscriber: Subscriber) -> Self {
        let subscriber = self.configured(subscriber);
        self.subscribers.push(subscriber);
        self
    }

    /// Overrides settings of the subscriber named `name` (the fn name of a
    /// `#[subscriber]`, or [`Subscriber::named`]), whether it is added
    /// before or after, or found by [`discover`](Self::discover). Fields
    /// left `None` keep what the code says; a name no subscriber has fails
    /// [`start`](Self::start).
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
    /// # #[event(channel = "orders.placed")]
    /// # struct OrderPlaced { id: u64 }
    /// #[flowgate::subscriber(durable = "billing", max_in_flight = 32)]
    /// async fn bill(order: OrderPlaced) -> Result<(), std::io::Error> { Ok(()) }
    ///
    /// let app = flowgate::App::new()
    ///     .subscriber(bill::subscriber())
    ///     .configure("bill", flowgate::SubscriberSettings {
    ///         max_in_flight: Some(8),
    ///         durable: Some("billing-eu".into()),
    ///         ..Default::default()
    ///     });
    /// let spec = app.subscribers()[0].spec();
    /// assert_eq!((spec.max_in_flight, spec.durable.as_deref()), (8, Some("billing-eu")));
    /// ```
    pub fn configure(self, name: impl Into<String>, settings: SubscriberSettings) -> Self {
        self.settings([(name.into(), settings)])
    }

    /// [`configure`](Self::configure) for each named subscriber: what a
    /// settings file deserializes into (see [`SubscriberSettings`]).
    pub fn settings(
        mut self,
        settings: impl IntoIterator<Item = (String, SubscriberSettings)>,
    ) -> Self {
        for (name, overrides) in settings {
            self.subscribers = std::mem::take(&mut self.subscribers)
                .into_iter()
                .map(|s| {
                    if s.name() == name {
                        overrides.apply(s)
                    } else {
                        s
                    }
                })
                .collect();
            let merged = self.settings.entry(name).or_default();
            merged.merge(overrides);
        }
        self
    }

    /// `subscriber` with the settings given for its name.
    fn configured(&self, subscriber: Subscriber) -> Subscriber {
        match self.settings.get(subscriber.name()) {
            Some(overrides) => overrides.apply(subscriber),
            None => subscriber,
        }
    }

    /// Adds every `#[flowgate::subscriber]` linked into the binary that is not
    /// registered already.
    pub fn discover(mut self) -> Self {
        for found in discovered() {
            let found = self.configured(found);
            let known = self
                .subscribers
                .iter()
                .any(|s| s.name() == found.name() && s.spec() == found.spec());
            if !known {
                self.subscribers.push(found);
            }
        }
        self
    }

    /// Wraps every subscriber's stack in `layer`, around the whole delivery
    /// (outermost: the first layer added sees a message first). See
    /// [`Subscriber::layer`] for what that means for retries and timeouts.
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

    /// Wraps each attempt of every subscriber in `layer`, inside flowgate's
    /// retry, outside the subscribers' own attempt layers (see
    /// [`Subscriber::attempt_layer`]).
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

    /// How long shutdown waits for in-flight handlers before giving up on them
    /// (their messages are redelivered after the ack wait).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// When [`RunningApp::health`] reports a subscription stalled or
    /// failing, and how often each consumer's backlog is sampled (see
    /// [`HealthPolicy`] for the defaults). Durations below a second count
    /// as one second.
    pub fn health_policy(mut self, policy: HealthPolicy) -> Self {
        self.health = policy.sane();
        self
    }

    /// Runs `hook` when the app starts, after the configuration checks and
    /// before anything is subscribed: a migration, a cache warm-up, a
    /// publish that must precede the consumers. Several hooks run one after
    /// the other in registration order, each awaited before the next.
    ///
    /// A hook is a closure returning a future of `Result<(), E>`, with any
    /// `E` that converts into a [`BoxError`] (your error type, `io::Error`,
    /// `anyhow::Error`, `String`). It may be called once per
    /// [`start`](Self::start) (an `App` is `Clone`), so it is an `Fn`:
    /// capture a cheap handle (a pool, an `Arc`) and clone it into each
    /// future, `move || { let db = db.clone(); async move { .. } }`.
    ///
    /// The first hook that fails (an `Err`, or a panic) stops the start:
    /// later on_start hooks do not run, nothing is subscribed, the
    /// [`on_shutdown`](Self::on_shutdown) hooks run, and `start` returns
    /// [`Error::StartHook`] naming the hook. See [`start`](Self::start) for
    /// the whole order.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flowgate::Error> {
    /// use std::sync::{Arc, Mutex};
    /// use flowgate_testkit::InMemory;
    /// # #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
    /// # #[event(channel = "orders.placed")]
    /// # struct OrderPlaced { id: u64 }
    ///
    /// #[flowgate::subscriber(durable = "billing")]
    /// async fn bill(order: OrderPlaced) -> Result<(), std::io::Error> { Ok(()) }
    ///
    /// /// Stands for a database pool: cheap to clone.
    /// #[derive(Clone, Default)]
    /// struct Db(Arc<Mutex<Vec<String>>>);
    ///
    /// let db = Db::default();
    /// let broker = InMemory::new();
    /// let running = flowgate::App::new()
    ///     .subscriber(bill::subscriber())
    ///     .on_start({
    ///         let (db, broker) = (db.clone(), broker.clone());
    ///         move || {
    ///             let (db, broker) = (db.clone(), broker.clone());
    ///             async move {
    ///                 // Before any subscription: the consumer does not exist yet.
    ///                 let consumers = broker.consumers("orders.placed").len();
    ///                 db.0.lock().unwrap().push(format!("migrated, {consumers} consumers"));
    ///                 Ok::<(), std::io::Error>(())
    ///             }
    ///         }
    ///     })
    ///     .start(broker.clone())
    ///     .await?;
    /// assert_eq!(*db.0.lock().unwrap(), ["migrated, 0 consumers"]);
    /// assert_eq!(broker.consumers("orders.placed").len(), 1);
    /// running.shutdown().await?;
    ///
    /// // A failing hook stops the start: nothing is subscribed.
    /// let broker = InMemory::new();
    /// let err = flowgate::App::new()
    ///     .subscriber(bill::subscriber())
    ///     .on_start(|| async { Err::<(), _>("the database is read-only") })
    ///     .start(broker.clone())
    ///     .await
    ///     .unwrap_err();
    /// assert!(matches!(err, flowgate::Error::StartHook { index: 0, .. }), "{err:?}");
    /// assert!(broker.consumers("orders.placed").is_empty());
    /// # Ok(()) }
    /// ```
    pub fn on_start<F, Fut, E>(mut self, hook: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.on_start.push(Hook::new(hook));
        self
    }

    /// Runs `hook` when the app stops, after the drain (no handler of the
    /// app runs or settles anything any more, and the acks are flushed):
    /// close a pool, flush a buffer. Several hooks run one after the other
    /// in registration order, each awaited before the next (not in reverse:
    /// they are not paired with on_start hooks, and read top to bottom as
    /// they run; register them in the order you want them run).
    ///
    /// Every on_shutdown hook runs, also after one failed or panicked;
    /// [`RunningApp::shutdown`] then returns [`Error::ShutdownHooks`] with
    /// each failure (and the drain's own error, if it had one). They also
    /// run when [`start`](Self::start) fails after its checks (an on_start
    /// hook, a subscription), so what an on_start hook opened is closed: a
    /// hook must cope with a start that stopped early. A [`RunningApp`]
    /// dropped without `shutdown` runs none of them. The hook's shape is
    /// [`on_start`](Self::on_start)'s.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flowgate::Error> {
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    ///
    /// let closed = Arc::new(AtomicBool::new(false));
    /// let running = flowgate::App::new()
    ///     .on_shutdown(|| async { Err::<(), _>(std::io::Error::other("cache unreachable")) })
    ///     .on_shutdown({
    ///         let closed = closed.clone();
    ///         move || {
    ///             let closed = closed.clone();
    ///             async move {
    ///                 closed.store(true, Ordering::SeqCst); // pool.close().await
    ///                 Ok::<(), std::io::Error>(())
    ///             }
    ///         }
    ///     })
    ///     .start(flowgate_testkit::InMemory::new())
    ///     .await?;
    ///
    /// let err = running.shutdown().await.unwrap_err();
    /// assert!(closed.load(Ordering::SeqCst), "the second hook ran after the first failed");
    /// let flowgate::Error::ShutdownHooks { failures, drain } = &err else { panic!("{err:?}") };
    /// assert_eq!(failures.len(), 1);
    /// assert_eq!((failures[0].index, failures[0].error.to_string()), (0, "cache unreachable".into()));
    /// assert!(drain.is_none(), "the drain itself was clean");
    /// # Ok(()) }
    /// ```
    pub fn on_shutdown<F, Fut, E>(mut self, hook: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.on_shutdown.push(Hook::new(hook));
        self
    }

    /// An AsyncAPI 3.0 document of the registered subscribers (call
    /// [`discover`](Self::discover) first to include the `#[subscriber]`s):
    /// their channels, operations, messages and payload schemas, and the
    /// dead-letter channels. See [`asyncapi`](crate::asyncapi).
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
    /// # #[event(channel = "orders.placed")]
    /// # struct OrderPlaced { id: u64 }
    /// #[flowgate::subscriber(durable = "billing")]
    /// async fn bill(order: OrderPlaced) -> Result<(), std::io::Error> { Ok(()) }
    ///
    /// let app = flowgate::App::new().discover();
    /// let doc = app.asyncapi().title("billing").version(env!("CARGO_PKG_VERSION"));
    /// println!("{}", doc.to_yaml());
    /// let value = doc.to_json_value();
    /// assert_eq!(value["channels"]["dlq.orders.placed"]["address"], "dlq.orders.placed");
    /// assert_eq!(value["operations"]["bill.dead_letter"]["action"], "send");
    /// ```
    pub fn asyncapi(&self) -> crate::asyncapi::Document {
        crate::asyncapi::Document::new(crate::asyncapi::collect(&self.subscribers))
    }

    /// The registered subscribers.
    pub fn subscribers(&self) -> &[Subscriber] {
        &self.subscribers
    }

    /// Checks every subscriber, runs the on_start hooks, subscribes them all
    /// on `transport`, and starts dispatching. Fails without starting
    /// anything when a check, a hook or a subscription fails. In order:
    ///
    /// 1. The configuration checks (names, settings, state, durables, ack
    ///    waits, ack modes). A failure returns its error; no hook runs.
    /// 2. The [`on_start`](Self::on_start) hooks, in registration order,
    ///    each awaited before the next. The first failure stops the start
    ///    with [`Error::StartHook`].
    /// 3. The subscriptions, one subscriber after the other. The checks that
    ///    need the broker happen here (a durable whose settings on the server
    ///    differ, a stream that holds only part of a wildcard); a failure
    ///    drops what was subscribed and returns its error (such as
    ///    [`Error::Subscribe`] or [`Error::ConsumerMismatch`]).
    /// 4. Dispatching starts; `start` returns the [`RunningApp`].
    ///
    /// Once the checks have passed, the [`on_shutdown`](Self::on_shutdown)
    /// hooks run exactly once: in [`RunningApp::shutdown`], or here, after
    /// everything subscribed was dropped, when step 2 or 3 fails. The error
    /// returned is then the start's; a shutdown hook that fails there too is
    /// logged at error level, naming it.
    pub async fn start<T: Transport>(mut self, transport: T) -> Result<RunningApp, Error> {
        self.check()?;
        let state = self
            .state
            .clone()
            .with(AppPublisher::new(transport.clone()));
        for subscriber in &self.subscribers {
            crate::startup::check_state(subscriber, &state)?;
            crate::startup::check_fits_ack_wait(subscriber, transport.supports_progress())?;
            crate::startup::check_coalesced_budget(subscriber)?;
            if subscriber.spec().ack == crate::AckMode::Coalesced
                && !transport.supports_coalesced_acks()
            {
                return Err(Error::Config(format!(
                    "`{}` asks for coalesced acks, which this transport does not support: use ack = \"auto\"",
                    subscriber.name()
                )));
            }
        }
        let on_start = std::mem::take(&mut self.on_start);
        let on_shutdown = std::mem::take(&mut self.on_shutdown);
        let started = match crate::lifespan::run_start(&on_start).await {
            Ok(()) => self.launch(transport, state).await,
            Err(err) => Err(err),
        };
        match started {
            Ok(mut running) => {
                running.on_shutdown = on_shutdown;
                Ok(running)
            }
            Err(err) => {
                crate::lifespan::run_shutdown_after_failed_start(&on_shutdown, &err).await;
                Err(err)
            }
        }
    }

    /// Subscribes every subscriber and starts dispatching (steps 3 and 4 of
    /// [`start`](Self::start)); what was subscribed is dropped when a
    /// subscription fails.
    async fn launch<T: Transport>(
        self,
        transport: T,
        state: StateMap,
    ) -> Result<RunningApp, Error> {
        let stop = CancellationToken::new();
        let abandon = CancellationToken::new();
        let finish = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut subscriptions = Vec::with_capacity(self.subscribers.len());
        for subscriber in self.subscribers {
            let dead_letter = subscriber.dead_letter_subject();
            let (name, spec, handler, failure, layers) = subscriber.into_parts();
            // The consumer's name in dead letters and in the ids of outputs.
            let durable_label = spec
                .durable
                .clone()
                .or_else(|| spec.queue.clone())
                .unwrap_or_else(|| format!("ephemeral-{name}"));
            let handler = handler.bind(
                state
                    .clone()
                    .with(OutputScope::new(&spec.channel, &durable_label)),
            );
            let metrics = Arc::new(SubscriberMetrics::new(&spec));
            let service = crate::stack::build(
                handler,
                &spec,
                &failure,
                metrics.clone(),
                &layers,
                &self.layers,
            );
            let deliveries = transport.subscribe(&spec).await?;
            let backlog = crate::DeliveryStream::backlog_probe(&deliveries);
            let gauges = BacklogGauges::new(&spec);
            let exhausted = match (&dead_letter, spec.max_deliver) {
                (Some(_), Some(_)) => transport.exhausted(&spec).await?,
                _ => None,
            };
            tracing::info!(subscriber = %name, channel = %spec.channel, durable = ?spec.durable, queue = ?spec.queue, "subscribed");
            // budget: kept by the broker where the transport can, so it holds across restarts and instances
            let ledger = Arc::new(AttemptLedger::new(
                transport.attempt_store(&spec).await?,
                &spec,
            ));
            let context = Arc::new(SubscriberContext {
                durable_label,
                name,
                spec,
                dead_letter,
                backoff: *failure.retry.backoff(),
                metrics,
                ledger,
                transport: transport.clone(),
                health: Arc::default(),
            });
            subscriptions.push((context, service, deliveries, exhausted, backlog, gauges));
        }
        let mut tasks = Vec::with_capacity(subscriptions.len());
        let mut tracked = Vec::with_capacity(subscriptions.len());
        for (context, service, deliveries, exhausted, backlog, gauges) in subscriptions {
            if let (Some(exhausted), Some(subject)) = (exhausted, context.dead_letter.clone()) {
                tracker.spawn(crate::dead_letter::forward_exhausted(
                    transport.clone(),
                    exhausted,
                    subject,
                    context.durable_label.clone(),
                    context.metrics.clone(),
                    context.backoff,
                    stop.clone(),
                ));
            }
            let in_flight = InFlight::new(context.spec.max_in_flight);
            let observed = Arc::new(std::sync::Mutex::new(Observed::new(
                tokio::time::Instant::now(),
            )));
            tokio::spawn(
                Monitor {
                    tally: context.health.clone(),
                    observed: observed.clone(),
                    probe: backlog,
                    gauges,
                    policy: self.health,
                    channel: Arc::from(context.spec.channel.as_str()),
                }
                .run(finish.clone()),
            );
            tracked.push(Tracked {
                subscriber: context.name.clone(),
                spec: context.spec.clone(),
                tally: context.health.clone(),
                observed,
                in_flight: in_flight.clone(),
            });
            let ended = context.health.ended_on_drop();
            let dispatched = crate::dispatch::dispatch(
                context,
                service,
                deliveries,
                Lifecycle {
                    stop: stop.clone(),
                    abandon: abandon.clone(),
                    finish: finish.clone(),
                    tracker: tracker.clone(),
                },
                in_flight.clone(),
            );
            let task = tokio::spawn(async move {
                let _ended = ended;
                dispatched.await;
            });
            tasks.push(Dispatcher { task, in_flight });
        }
        let health = HealthProbe {
            connection: {
                let transport = transport.clone();
                Arc::new(move || transport.connection())
            },
            stop: stop.clone(),
            subscriptions: tracked.into(),
            policy: self.health,
        };
        let flush = {
            let transport = transport.clone();
            Box::new(move || -> FlushFuture {
                let transport = transport.clone();
                Box::pin(async move { transport.flush().await })
            })
        };
        Ok(RunningApp {
            stop,
            abandon,
            finish,
            tracker,
            dispatchers: tasks,
            flush,
            shutdown_timeout: self.shutdown_timeout,
            health,
            on_shutdown: Vec::new(),
        })
    }

    /// Runs on `transport` until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run<T: Transport>(self, transport: T) -> Result<(), Error> {
        self.run_until(transport, shutdown_signal()).await
    }

    /// Runs on `transport` until `signal` completes, then shuts down gracefully.
    pub async fn run_until<T: Transport>(
        self,
        transport: T,
        signal: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let running = self.start(transport).await?;
        signal.await;
        tracing::info!("shutting down: draining in-flight handlers");
        running.shutdown().await
    }

    fn check(&self) -> Result<(), Error> {
        crate::settings::check_names(&self.subscribers, &self.settings)?;
        for (i, subscriber) in self.subscribers.iter().enumerate() {
            crate::startup::check_subscriber(subscriber)?;
            crate::startup::check_payloads(subscriber)?;
            let spec = subscriber.spec();
            if spec.durable.is_none() {
                continue;
            }
            let twin = self.subscribers[..i].iter().find(|other| {
                other.spec().channel == spec.channel
                    && other.spec().durable == spec.durable
                    && other.spec().queue == spec.queue
            });
            if let Some(twin) = twin.filter(|twin| twin.name() == subscriber.name()) {
                return Err(Error::Config(format!(
                    "`{}` is registered twice: `.discover()` finds every #[subscriber] already, so drop the `.subscriber({}::subscriber())` next to it (or one of two `.subscriber(...)` calls)",
                    twin.name(),
                    twin.name(),
                )));
            }
            if let Some(twin) = twin {
                return Err(Error::Config(format!(
                    "`{}` and `{}` both use durable {:?} on `{}`: give each subscriber its own durable name",
                    twin.name(),
                    subscriber.name(),
                    spec.durable.as_deref().unwrap_or_default(),
                    spec.channel
                )));
            }
        }
        Ok(())
    }
}
