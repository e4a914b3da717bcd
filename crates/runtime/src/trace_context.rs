//! W3C trace context (`traceparent`, `tracestate`) across the broker.
//!
//! With the `opentelemetry` feature, a publish carries the context of the
//! span it is made in, in the message's headers; the `flowgate.message`
//! span of each delivery of that message continues it, each attempt is a
//! `flowgate.attempt` span under it, spans of the user's tower layers and
//! handler are children of it, and a dead letter carries the context of the
//! delivery that gave up. One trace so runs from the request that published
//! an order to the handler that billed it, across retries, into the dead
//! letter.
//!
//! The headers are written and read by OpenTelemetry's global propagator,
//! which the app sets once, with the W3C one for `traceparent` and
//! `tracestate`; the spans reach OpenTelemetry through
//! `tracing-opentelemetry`'s layer:
//!
//! ```text
//! opentelemetry::global::set_text_map_propagator(
//!     opentelemetry_sdk::propagation::TraceContextPropagator::new(),
//! );
//! tracing_subscriber::registry()
//!     .with(tracing_opentelemetry::layer().with_tracer(tracer))
//!     .init();
//! ```
//!
//! The `trace` example of `flowgate-bench` does it all and prints the spans.
//!
//! Without the feature, or where no span of the publisher is known to
//! OpenTelemetry, headers pass through untouched: a `traceparent` set by
//! the publisher reaches the handler as it was sent, and a dead letter
//! keeps the original's. NATS Streaming has no headers: a trace stops at a
//! publish there.

use crate::Headers;

/// The W3C header that names the trace and the parent span.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header with vendor-specific trace state.
pub const TRACESTATE: &str = "tracestate";

/// Adds the current span's context to `headers` of a message about to be
/// published, unless the publisher set a `traceparent` of its own.
#[inline]
pub(crate) fn inject(headers: &mut Option<Headers>) {
    #[cfg(feature = "opentelemetry")]
    otel::inject(headers);
    #[cfg(not(feature = "opentelemetry"))]
    let _ = headers;
}

/// Makes the context the message's `headers` carry the parent of `span`,
/// the delivery's `flowgate.message` span, before it is first entered.
#[inline]
pub(crate) fn continue_in(span: &tracing::Span, headers: Option<&Headers>) {
    #[cfg(feature = "opentelemetry")]
    if let Some(headers) = headers {
        otel::continue_in(span, headers);
    }
    #[cfg(not(feature = "opentelemetry"))]
    let _ = (span, headers);
}

/// Gives a dead letter the trace context of the delivery that gave up: the
/// current span's where OpenTelemetry knows it, else the original's headers
/// as they came.
pub(crate) fn carry_into_dead_letter(letter: &mut Headers, original: Option<&Headers>) {
    #[cfg(feature = "opentelemetry")]
    if otel::inject_current(letter) {
        return;
    }
    if let Some(original) = original {
        copy(original, letter);
    }
}

/// Copies the trace context `from` carries (`traceparent`, `tracestate`)
/// into `to`, as it is.
pub(crate) fn copy(from: &Headers, to: &mut Headers) {
    for name in [TRACEPARENT, TRACESTATE] {
        if let Some(value) = from.get(name) {
            to.insert(name, value.as_str());
        }
    }
}

#[cfg(feature = "opentelemetry")]
mod otel {
    use opentelemetry::propagation::{Extractor, Injector};
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::TRACEPARENT;
    use crate::Headers;

    struct HeaderInjector<'a>(&'a mut Headers);

    impl Injector for HeaderInjector<'_> {
        fn set(&mut self, key: &str, value: String) {
            self.0.insert(key, value);
        }
    }

    struct HeaderExtractor<'a>(&'a Headers);

    impl Extractor for HeaderExtractor<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).map(|value| value.as_str())
        }

        fn keys(&self) -> Vec<&str> {
            self.0.iter().map(|(name, _)| name.as_ref()).collect()
        }
    }

    pub(super) fn inject(headers: &mut Option<Headers>) {
        if headers
            .as_ref()
            .is_some_and(|h| h.get(TRACEPARENT).is_some())
        {
            return;
        }
        let mut added = Headers::new();
        if inject_current(&mut added) {
            match headers {
                Some(headers) => {
                    for (name, values) in added.iter() {
                        for value in values {
                            headers.insert(name.clone(), value.clone());
                        }
                    }
                }
                None => *headers = Some(added),
            }
        }
    }

    /// Writes the current span's context into `headers`; false when there
    /// is none OpenTelemetry knows (no layer, or no span).
    pub(super) fn inject_current(headers: &mut Headers) -> bool {
        let context = tracing::Span::current().context();
        if !context.span().span_context().is_valid() {
            return false;
        }
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut HeaderInjector(headers));
        });
        true
    }

    pub(super) fn continue_in(span: &tracing::Span, headers: &Headers) {
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(headers))
        });
        if parent.span().span_context().is_valid() {
            // Fails only where no OpenTelemetry layer sees the span: then
            // there is no trace to continue.
            let _ = span.set_parent(parent);
        }
    }
}
