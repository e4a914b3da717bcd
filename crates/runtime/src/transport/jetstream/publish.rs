//! Publishing to a stream and waiting for its ack, with no allocation beyond
//! the client's own.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll};

use async_nats::jetstream::context::{PublishAckFuture, PublishError as NatsPublishError};
use async_nats::jetstream::publish::PublishAck as NatsPublishAck;
use async_nats::Subject;

use crate::{PublishAck, PublishError};

type AckFuture = Pin<Box<dyn Future<Output = Result<NatsPublishAck, NatsPublishError>> + Send>>;

/// Resolves to the stream's ack of one JetStream publish.
pub struct JetStreamPendingAck {
    subject: Subject,
    state: State,
}

enum State {
    Sent(Option<PublishAckFuture>),
    Waiting(AckFuture),
}

impl std::fmt::Debug for JetStreamPendingAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamPendingAck")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl JetStreamPendingAck {
    pub(crate) fn new(subject: Subject, sent: PublishAckFuture) -> Self {
        Self {
            subject,
            state: State::Sent(Some(sent)),
        }
    }
}

/// A publish error for `subject`.
pub(crate) fn broker_error(
    subject: &Subject,
    err: impl std::error::Error + Send + Sync + 'static,
) -> PublishError {
    PublishError::Broker {
        subject: subject.to_string(),
        source: Box::new(err),
    }
}

impl Future for JetStreamPendingAck {
    type Output = Result<PublishAck, PublishError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Sent(sent) => {
                    let Some(sent) = sent.take() else {
                        return Poll::Ready(Err(broker_error(
                            &this.subject,
                            std::io::Error::other("publish ack polled after it resolved"),
                        )));
                    };
                    this.state = State::Waiting(sent.into_future());
                }
                State::Waiting(ack) => {
                    return ack.as_mut().poll(cx).map(|result| match result {
                        Ok(ack) => Ok(PublishAck {
                            stream: ack.stream,
                            sequence: ack.sequence,
                            duplicate: ack.duplicate,
                        }),
                        Err(err) => Err(broker_error(&this.subject, err)),
                    })
                }
            }
        }
    }
}
