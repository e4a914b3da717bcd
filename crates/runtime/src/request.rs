//! The one type-erased request every subscriber's tower stack serves.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::attempts::AttemptRecorder;
use crate::{AckError, Acker, Metadata};

/// One delivery on its way through the middleware stack to a handler: the raw
/// payload, its metadata, and (for `ack = "manual"` subscribers) the means to
/// settle it.
///
/// Layers see every message as a `Request`, whatever its payload type, so one
/// `tower::Layer` serves every subscriber.
///
/// ```
/// use std::time::SystemTime;
/// let meta = flowgate::Metadata::new("orders.placed", 1, 1, SystemTime::UNIX_EPOCH, None);
/// let request = flowgate::Request::new("{}".into(), meta);
/// assert_eq!(request.metadata().subject(), "orders.placed");
/// assert_eq!(&request.payload()[..], b"{}");
/// ```
#[derive(Debug, Clone)]
pub struct Request {
    payload: Bytes,
    metadata: Metadata,
    attempt: u32,
    manual_ack: Option<ManualAck>,
    /// How the retry layer records in-process attempts of the message.
    recorder: AttemptRecorder,
}

impl Request {
    /// A request for a delivery the runtime settles itself.
    pub fn new(payload: Bytes, metadata: Metadata) -> Self {
        Self {
            attempt: metadata.delivery_count().max(1),
            payload,
            metadata,
            manual_ack: None,
            recorder: AttemptRecorder::Unrecorded,
        }
    }

    /// The same request as attempt number `attempt` of its failure budget.
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// Which attempt this is, counting in-process retries and broker
    /// redeliveries together (1 for the first try of the first delivery).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The request for a delivery the dispatcher hands to the stack, built
    /// in one go: attempt `attempt` of its budget, recording in-process
    /// attempts through `recorder`, settled through `manual_ack` when the
    /// subscriber settles by hand.
    pub(crate) fn delivered(
        payload: Bytes,
        metadata: Metadata,
        attempt: u32,
        recorder: AttemptRecorder,
        manual_ack: Option<ManualAck>,
    ) -> Self {
        Self {
            payload,
            metadata,
            attempt,
            manual_ack,
            recorder,
        }
    }

    /// How in-process attempts of this request's message are recorded.
    pub(crate) fn recorder(&self) -> &AttemptRecorder {
        &self.recorder
    }

    /// The raw payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// What the broker says about the delivery.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Takes the parts apart.
    pub fn into_parts(self) -> (Bytes, Metadata, Option<ManualAck>) {
        (self.payload, self.metadata, self.manual_ack)
    }

    /// The settlement handle of a manual-ack subscriber's request.
    pub(crate) fn manual_ack(&self) -> Option<&ManualAck> {
        self.manual_ack.as_ref()
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An [`Acker`] behind a pointer, for handlers that settle messages themselves.
trait DynAcker: Send + Sync + 'static {
    fn settle(&self, how: Settlement) -> BoxFuture<'_, Result<(), AckError>>;
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Settlement {
    Ack,
    Nak(Option<Duration>),
    Term,
    InProgress,
}

impl<A: Acker> DynAcker for A {
    fn settle(&self, how: Settlement) -> BoxFuture<'_, Result<(), AckError>> {
        match how {
            Settlement::Ack => Box::pin(self.ack()),
            Settlement::Nak(delay) => Box::pin(self.nak(delay)),
            Settlement::Term => Box::pin(self.term()),
            Settlement::InProgress => Box::pin(self.in_progress()),
        }
    }
}

struct ManualAckInner {
    settled: AtomicBool,
    acker: Box<dyn DynAcker>,
}

/// The settlement handle a manual-ack handler receives inside its
/// [`Message`](crate::Message). Cloning shares the handle.
#[derive(Clone)]
pub struct ManualAck(Arc<ManualAckInner>);

impl std::fmt::Debug for ManualAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManualAck")
            .field("settled", &self.is_settled())
            .finish()
    }
}

impl ManualAck {
    pub(crate) fn new<A: Acker>(acker: A) -> Self {
        Self(Arc::new(ManualAckInner {
            settled: AtomicBool::new(false),
            acker: Box::new(acker),
        }))
    }

    /// Whether the message was acked, nak'd or terminated already.
    pub fn is_settled(&self) -> bool {
        self.0.settled.load(Ordering::Acquire)
    }

    pub(crate) async fn settle(&self, how: Settlement) -> Result<(), AckError> {
        if !matches!(how, Settlement::InProgress) {
            self.0.settled.store(true, Ordering::Release);
        }
        self.0.acker.settle(how).await
    }
}
