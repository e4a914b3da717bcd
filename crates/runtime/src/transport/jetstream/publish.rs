//! Publishing to a stream and waiting for its ack, with no allocation beyond
//! the client's own.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};

use async_nats::jetstream::context::{PublishAckFuture, PublishError as NatsPublishError};
use async_nats::jetstream::publish::PublishAck as NatsPublishAck;
use async_nats::Subject;

use crate::{PublishAck, PublishError};

/// The subject published to last, kept once its stream is known: publishing
/// to it again skips the stream lookup and shares the subject's bytes instead
/// of converting the channel anew.
#[derive(Debug, Default)]
pub(crate) struct LastSubject(Mutex<Option<Subject>>);

impl LastSubject {
    /// The kept subject, when it is `channel`.
    pub(crate) fn get(&self, channel: &str) -> Option<Subject> {
        let last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        last.as_ref()
            .filter(|subject| subject.as_str() == channel)
            .cloned()
    }

    /// Keeps `subject`, whose stream is known.
    pub(crate) fn set(&self, subject: Subject) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(subject);
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_subject_is_shared_for_its_channel_only() {
        let last = LastSubject::default();
        assert!(last.get("orders.placed").is_none(), "nothing kept yet");
        let subject = Subject::from("orders.placed".to_owned());
        last.set(subject.clone());
        let again = last.get("orders.placed").expect("kept");
        assert_eq!(again.as_ptr(), subject.as_ptr(), "the same bytes, shared");
        assert!(last.get("orders").is_none());
        assert!(last.get("orders.placed.x").is_none());
        last.set(Subject::from("orders".to_owned()));
        assert!(last.get("orders.placed").is_none(), "replaced");
        assert_eq!(
            last.get("orders").map(|s| s.to_string()),
            Some("orders".to_owned())
        );
    }
}
