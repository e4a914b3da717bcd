//! The errors of the runtime.

use crate::{DecodeError, EncodeError, NameError};

/// A boxed error, as tower layers produce.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Starting, running or stopping an app failed.
///
/// Its `Debug` form is its message followed by the errors that caused it,
/// so a `main` that returns `Result<(), Box<dyn std::error::Error>>` prints
/// what to do next:
///
/// ```
/// let err = flowgate::Error::ConsumerMismatch {
///     stream: "ORDERS".into(),
///     durable: "billing".into(),
///     field: "max_deliver",
///     existing: "5".into(),
///     wanted: "3".into(),
/// };
/// let printed = format!("{err:?}");
/// assert!(printed.starts_with("durable `billing` on stream `ORDERS` exists with max_deliver = 5"));
/// assert!(printed.contains("nats consumer rm ORDERS billing"));
/// ```
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A channel, durable or queue name the broker would refuse.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A setting that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Connecting to the broker failed.
    #[error("cannot connect to NATS at {url}: {source}; check the URL, the credentials, and that the server is up")]
    Connect {
        /// The server address.
        url: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },
    /// The broker refused or failed a subscription.
    #[error("cannot subscribe to `{channel}`: {source}")]
    Subscribe {
        /// The channel.
        channel: String,
        /// The broker's error.
        #[source]
        source: BoxError,
    },
    /// A durable consumer exists with settings other than the subscriber's.
    #[error("durable `{durable}` on stream `{stream}` exists with {field} = {existing}, but the subscriber asks for {wanted}; delete the consumer (`nats consumer rm {stream} {durable}`) or choose a new durable name")]
    ConsumerMismatch {
        /// The stream.
        stream: String,
        /// The durable consumer.
        durable: String,
        /// The setting that differs.
        field: &'static str,
        /// What the broker has.
        existing: String,
        /// What the subscriber wants.
        wanted: String,
    },
    /// A requested JetStream feature needs a newer nats-server.
    #[error(transparent)]
    ServerTooOld(#[from] crate::transport::jetstream::ServerTooOld),
    /// Talking to the broker failed.
    #[error("broker error: {0}")]
    Broker(#[source] BoxError),
    /// A handler takes a state the app was not given.
    #[error("`{subscriber}` takes a parameter that needs state `{type_name}`, which the app does not have: add `.state(value)` with a value of that type to the App")]
    MissingState {
        /// The subscriber.
        subscriber: String,
        /// The type of the missing state.
        type_name: &'static str,
    },
    /// An [`on_start`](crate::App::on_start) hook failed (or panicked): the
    /// app did not start. Nothing was subscribed, the later on_start hooks
    /// did not run, and the on_shutdown hooks ran.
    #[error("on_start hook #{index} `{name}` failed: {source}; the app did not start (nothing was subscribed, the on_shutdown hooks ran): fix what the hook needs and start again")]
    StartHook {
        /// Its position among the on_start hooks, in registration order
        /// from 0.
        index: usize,
        /// Its type's name: the fn's path (`my_app::migrate`), or for a
        /// closure the fn it was written in (`my_app::main::{{closure}}`).
        name: &'static str,
        /// Its error.
        #[source]
        source: BoxError,
    },
    /// One or more [`on_shutdown`](crate::App::on_shutdown) hooks failed (or
    /// panicked). Every hook ran, after the drain; when the drain failed too
    /// (handlers past the deadline, acks not flushed), its error is `drain`
    /// and comes first in the message.
    #[error("{}", shutdown_hooks_message(failures, drain.as_deref()))]
    ShutdownHooks {
        /// Each hook that failed, in the order they ran.
        failures: Vec<HookFailure>,
        /// The drain's own error, which [`shutdown`](crate::RunningApp::shutdown)
        /// returns alone when no hook fails.
        #[source]
        drain: Option<Box<Error>>,
    },
    /// In-flight handlers did not finish within the shutdown deadline.
    #[error("{remaining} handler(s) still running after the {deadline:?} shutdown deadline; their messages will be redelivered")]
    ShutdownTimeout {
        /// Handlers still running.
        remaining: usize,
        /// The deadline that passed.
        deadline: std::time::Duration,
    },
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_with_causes(self, f)
    }
}

/// `error`'s message, then each error that caused it that the message does
/// not already quote, one per line under "Caused by:".
fn write_with_causes(
    error: &dyn std::error::Error,
    f: &mut std::fmt::Formatter<'_>,
) -> std::fmt::Result {
    let message = error.to_string();
    f.write_str(&message)?;
    let mut heading = false;
    let mut cause = error.source();
    while let Some(source) = cause {
        let text = source.to_string();
        if !message.contains(&text) {
            if !heading {
                f.write_str("\n\nCaused by:")?;
                heading = true;
            }
            write!(f, "\n    {text}")?;
        }
        cause = source.source();
    }
    Ok(())
}

/// One [`on_shutdown`](crate::App::on_shutdown) hook that failed, in an
/// [`Error::ShutdownHooks`].
#[derive(Debug)]
#[non_exhaustive]
pub struct HookFailure {
    /// Its position among the on_shutdown hooks, in registration order from 0.
    pub index: usize,
    /// Its type's name: the fn's path (`my_app::close_pool`), or for a
    /// closure the fn it was written in (`my_app::main::{{closure}}`).
    pub name: &'static str,
    /// Its error (a panic's message for a hook that panicked).
    pub error: BoxError,
}

fn shutdown_hooks_message(failures: &[HookFailure], drain: Option<&Error>) -> String {
    let hooks = failures
        .iter()
        .map(|f| format!("#{} `{}`: {}", f.index, f.name, f.error))
        .collect::<Vec<_>>()
        .join("; ");
    let count = failures.len();
    match drain {
        Some(drain) => format!("the drain failed: {drain}; then {count} on_shutdown hook(s) failed: {hooks}; every hook ran, so see each error for what may still be open"),
        None => format!("{count} on_shutdown hook(s) failed after a clean drain: {hooks}; every hook ran, so see each error for what may still be open"),
    }
}

/// Publishing failed. The message may not have been stored: publish it again
/// (with a message id, so the broker drops the duplicate if it was).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The event could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The event type declares no channel.
    #[error(
        "`{type_name}` declares no channel: add #[event(channel = \"...\")] to its definition, or name the subject with `publish_to(subject, &event)` (or `PublishOptions::channel`)"
    )]
    NoChannel {
        /// The event type.
        type_name: &'static str,
    },
    /// The event type declares a wildcard channel, which matches subjects
    /// but cannot be published to.
    #[error("`{type_name}` declares the wildcard channel `{channel}`, which cannot be published to: publish it to a concrete subject that `{channel}` matches with `publish_to(subject, &event)`")]
    WildcardChannel {
        /// The event type.
        type_name: &'static str,
        /// Its channel.
        channel: &'static str,
    },
    /// `publish_to` named a subject the event type's channel does not match.
    #[error("`{type_name}` declares channel `{channel}`, which does not match subject `{subject}`: publish it to a subject `{channel}` matches, or use `publish_with` and `PublishOptions::channel` to send it elsewhere on purpose")]
    SubjectMismatch {
        /// The event type.
        type_name: &'static str,
        /// Its channel.
        channel: &'static str,
        /// The subject asked for.
        subject: String,
    },
    /// A channel name the broker would refuse.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The broker refused the message or did not answer.
    #[error("publish to `{subject}` failed: {source}")]
    Broker {
        /// The subject.
        subject: String,
        /// The broker's error.
        #[source]
        source: BoxError,
    },
    /// Events of a [`PublishWindow`](crate::PublishWindow) the broker did
    /// not store (their acks failed or timed out): publish them again.
    #[error("{} event(s) not stored by the broker ({}): publish them again, with a message id so a copy that was stored after all is dropped", failures.len(), Unstored::summary(failures))]
    NotStored {
        /// Each event not stored, oldest first.
        failures: Vec<Unstored>,
    },
}

/// One event of a [`PublishWindow`](crate::PublishWindow) the broker did not
/// store.
#[derive(Debug)]
#[non_exhaustive]
pub struct Unstored {
    /// The window's number for it, as its `publish` returned.
    pub number: u64,
    /// Its encoded payload, to publish again.
    pub payload: bytes::Bytes,
    /// Its message id, if it had one.
    pub message_id: Option<String>,
    /// Why it was not stored.
    pub error: Box<PublishError>,
}

impl Unstored {
    /// "#3: <error>", with a count of the rest.
    fn summary(failures: &[Unstored]) -> String {
        match failures.first() {
            Some(first) if failures.len() > 1 => format!(
                "#{}: {}; and {} more",
                first.number,
                first.error,
                failures.len() - 1
            ),
            Some(first) => format!("#{}: {}", first.number, first.error),
            None => "none".to_owned(),
        }
    }
}

/// Why a handler did not succeed. The dispatcher decides the settlement from it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// The payload did not decode: permanent, the message is terminated.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The handler returned an error: the message is nak'd and redelivered.
    #[error("handler failed: {0}")]
    Failed(#[source] BoxError),
    /// The handler panicked: the message is nak'd and redelivered.
    #[error("handler panicked: {0}")]
    Panicked(String),
    /// Publishing the handler's output failed: the input is not acked, and
    /// is retried within its failure budget.
    #[error(
        "publishing the handler's output failed: {0}; the input is not acked and will be retried"
    )]
    Output(#[source] PublishError),
    /// An extractor could not build its parameter: permanent unless its
    /// error is a retryable [`Failure`](crate::Failure).
    #[error("parameter `{parameter}` rejected the message: {source}")]
    Rejected {
        /// The parameter's type.
        parameter: &'static str,
        /// Why.
        #[source]
        source: BoxError,
    },
}

impl HandlerError {
    /// Whether a redelivery could succeed.
    ///
    /// ```
    /// let err = flowgate::HandlerError::Failed("database down".into());
    /// assert!(err.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        !matches!(
            crate::failure::classify_handler_error(self),
            crate::failure::Class::Undecodable | crate::failure::Class::Permanent
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connection refused")]
    struct Refused;

    #[derive(Debug, thiserror::Error)]
    #[error("handshake failed")]
    struct Handshake(#[source] Refused);

    #[test]
    fn shutdown_hook_failures_come_after_the_drains_error() {
        let failure = |index, error: &str| HookFailure {
            index,
            name: "app::close_pool",
            error: error.into(),
        };
        let clean = Error::ShutdownHooks {
            failures: vec![failure(1, "pool busy")],
            drain: None,
        };
        assert!(
            clean.to_string().starts_with(
                "1 on_shutdown hook(s) failed after a clean drain: #1 `app::close_pool`: pool busy;"
            ),
            "{clean}"
        );
        let both = Error::ShutdownHooks {
            failures: vec![failure(0, "pool busy"), failure(2, "cache gone")],
            drain: Some(Box::new(Error::ShutdownTimeout {
                remaining: 2,
                deadline: std::time::Duration::from_secs(30),
            })),
        };
        let printed = format!("{both:?}");
        assert!(
            printed.starts_with("the drain failed: 2 handler(s) still running after the 30s shutdown deadline; their messages will be redelivered; then 2 on_shutdown hook(s) failed: #0 `app::close_pool`: pool busy; #2 `app::close_pool`: cache gone;"),
            "{printed}"
        );
        assert!(!printed.contains("Caused by"), "{printed}");
    }

    #[test]
    fn debug_is_the_message_and_the_causes_it_does_not_quote() {
        let err = Error::Broker(Box::new(Handshake(Refused)));
        assert_eq!(
            format!("{err:?}"),
            "broker error: handshake failed\n\nCaused by:\n    connection refused"
        );
        let quoted = Error::Connect {
            url: "nats://localhost:4222".into(),
            source: Box::new(Refused),
        };
        let printed = format!("{quoted:?}");
        assert!(printed.starts_with(
            "cannot connect to NATS at nats://localhost:4222: connection refused; check"
        ));
        assert!(!printed.contains("Caused by"), "{printed}");
    }
}
