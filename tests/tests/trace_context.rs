//! W3C trace context across a real nats-server: the span an order is
//! published in is the parent of each delivery's `flowgate.message` span;
//! a user's tower layer opens its span under it, each attempt is a
//! `flowgate.attempt` span below, in-process retries and broker redeliveries
//! alike, and the dead letter carries the context of the delivery that
//! gave up. One trace, from the publishing request to the dead letter.
//!
//! The OpenTelemetry layer is global (handlers run on the runtime's worker
//! threads), so this binary holds this one test.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use flowgate::middleware::retry::{Backoff, RetryPolicy};
use flowgate::trace_context::TRACEPARENT;
use flowgate::{App, BoxError, Message, PublishOptions, Publisher, Request, Subscriber};
use flowgate_tests::{eventually, stored_messages, JobError, NatsServer, DEADLINE};
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
struct OrderPlaced {
    id: u64,
}

/// A tower layer that opens a span per delivery, as tower-http's
/// `TraceLayer` does: entered while the inner service is called, and
/// around the inner future.
#[derive(Clone)]
struct SpanLayer;

impl<S> tower::Layer<S> for SpanLayer {
    type Service = SpanService<S>;

    fn layer(&self, inner: S) -> SpanService<S> {
        SpanService(inner)
    }
}

#[derive(Clone)]
struct SpanService<S>(S);

impl<S> tower::Service<Request> for SpanService<S>
where
    S: tower::Service<Request, Response = (), Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = BoxError;
    type Future = futures::future::BoxFuture<'static, Result<(), BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let span = tracing::info_span!("user.layer");
        let inner = {
            let _entered = span.enter();
            self.0.call(request)
        };
        Box::pin(inner.instrument(span))
    }
}

/// Installs the OpenTelemetry layer with an in-memory exporter and the W3C
/// propagator, for the whole binary.
fn otel() -> InMemorySpanExporter {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let tracer = provider.tracer("flowgate-tests");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .with(tracing_subscriber::EnvFilter::new("info"));
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    exporter
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|span| span.name == name).collect()
}

fn attribute(span: &SpanData, key: &str) -> Option<i64> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .and_then(|kv| match &kv.value {
            opentelemetry::Value::I64(v) => Some(*v),
            other => other.as_str().parse().ok(),
        })
}

/// The trace and parent span a `traceparent` names.
fn parse_traceparent(value: &str) -> (TraceId, SpanId) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "not a W3C traceparent: {value}");
    let trace = TraceId::from_hex(parts[1]).expect("trace id");
    let span = SpanId::from_hex(parts[2]).expect("span id");
    (trace, span)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_publisher_through_every_attempt_into_the_dead_letter() {
    let exporter = otel();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let channel = "traced.orders";
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler = {
        let seen = seen.clone();
        move |order: Message<OrderPlaced>| {
            let seen = seen.clone();
            async move {
                let traceparent = order
                    .metadata()
                    .headers()
                    .and_then(|h| h.get(TRACEPARENT))
                    .map(|v| v.as_str().to_owned());
                flowgate_tests::lock(&seen).push((order.attempt(), traceparent));
                Err::<(), _>(JobError(format!("order {} declined", order.id)))
            }
        }
    };
    // Attempt 1 fails and is retried in-process (100 ms); attempt 2's
    // retry (200 ms) goes back to the broker; attempt 3, on the
    // redelivery, spends the budget: a dead letter.
    let backoff = Backoff::default().without_jitter();
    let app = App::new()
        .subscriber(
            Subscriber::new(channel, handler)
                .durable("traced")
                .max_deliver(3)
                .ack_wait(Duration::from_secs(2))
                .retry(
                    RetryPolicy::default()
                        .backoff_with(backoff)
                        .in_process_limit(Duration::from_millis(150)),
                )
                .layer(SpanLayer),
        )
        .start(nats.clone())
        .await
        .expect("app starts");

    let request = tracing::info_span!("http.request");
    Publisher::new(nats.clone())
        .publish_with(
            &OrderPlaced { id: 7 },
            PublishOptions::new().channel(channel),
        )
        .instrument(request.clone())
        .await
        .expect("publish");
    let request_id = {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let context = request.context();
        let span = context.span();
        let ids = span.span_context();
        (ids.trace_id(), ids.span_id())
    };
    drop(request);

    let dead_letter = format!("dlq.{channel}");
    let lettered = eventually(DEADLINE, || async {
        !stored_messages(&nats, &dead_letter).await.is_empty()
    })
    .await;
    assert!(lettered, "the order reached its dead letters");
    app.shutdown().await.expect("clean shutdown");

    let (trace, publishing_span) = request_id;
    let attempts = flowgate_tests::lock(&seen).clone();
    assert_eq!(
        attempts
            .iter()
            .map(|(attempt, _)| *attempt)
            .collect::<Vec<_>>(),
        vec![1, 2, 3],
        "two attempts on the first delivery, one on the redelivery"
    );
    for (attempt, traceparent) in &attempts {
        let traceparent = traceparent
            .as_deref()
            .unwrap_or_else(|| panic!("attempt {attempt} saw no traceparent header"));
        assert_eq!(
            parse_traceparent(traceparent),
            (trace, publishing_span),
            "the published message names the publishing span"
        );
    }

    // Spans are exported as they close: the last delivery's close after
    // its settlement.
    let spans = {
        let mut spans = Vec::new();
        let complete = eventually(DEADLINE, || {
            spans = exporter.get_finished_spans().expect("spans");
            let done = named(&spans, "flowgate.message").len() == 2
                && named(&spans, "flowgate.attempt").len() == 3;
            async move { done }
        })
        .await;
        assert!(
            complete,
            "two deliveries and three attempts exported: {spans:#?}"
        );
        spans
    };
    let messages = named(&spans, "flowgate.message");
    for message in &messages {
        assert_eq!(message.span_context.trace_id(), trace, "one trace");
        assert_eq!(
            message.parent_span_id, publishing_span,
            "each delivery continues the publishing span"
        );
        assert!(
            message.parent_span_is_remote,
            "its parent came over the broker"
        );
    }
    let layers = named(&spans, "user.layer");
    assert_eq!(layers.len(), 2, "the user's layer ran once per delivery");
    for layer in &layers {
        assert!(
            messages
                .iter()
                .any(|m| m.span_context.span_id() == layer.parent_span_id),
            "the user's layer span is a child of a delivery's span"
        );
    }
    let mut attempts_seen: Vec<i64> = Vec::new();
    for attempt in named(&spans, "flowgate.attempt") {
        assert_eq!(attempt.span_context.trace_id(), trace, "one trace");
        assert!(
            layers
                .iter()
                .any(|l| l.span_context.span_id() == attempt.parent_span_id),
            "each attempt runs under the user's layer, inside its delivery"
        );
        attempts_seen.push(
            attribute(attempt, "attempt")
                .unwrap_or_else(|| panic!("no attempt number in {:?}", attempt.attributes)),
        );
    }
    attempts_seen.sort_unstable();
    assert_eq!(attempts_seen, vec![1, 2, 3]);

    let letters = stored_messages(&nats, &dead_letter).await;
    assert_eq!(letters.len(), 1);
    let traceparent = letters[0]
        .headers
        .get(TRACEPARENT)
        .map(|v| v.as_str())
        .expect("the dead letter carries a traceparent");
    let (letter_trace, letter_parent) = parse_traceparent(traceparent);
    assert_eq!(letter_trace, trace, "the dead letter is in the same trace");
    let redelivery = messages
        .iter()
        .find(|m| attribute(m, "delivery") == Some(2))
        .expect("the redelivery's span");
    assert_eq!(
        letter_parent,
        redelivery.span_context.span_id(),
        "the dead letter names the delivery that gave up"
    );
}
