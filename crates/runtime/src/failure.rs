//! [`Failure`]: a handler error that says what should happen next, and how
//! the runtime classifies every error that leaves a stack.

use std::time::Duration;

use crate::middleware::retry::Retried;
use crate::{BoxError, HandlerError};

/// What a handler asks for when it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Try again, on the retry policy's schedule (the default).
    Retryable,
    /// Try again after this delay.
    RetryAfter(Duration),
    /// Never try again: dead-letter the message at once.
    Permanent,
}

/// A handler error with a say in what happens next.
///
/// Return `Result<(), flowgate::Failure>` from a handler to mark an error
/// permanent or to ask for a delay; `?` turns any error into a retryable
/// `Failure`.
///
/// ```
/// use std::time::Duration;
/// use flowgate::{Failure, FailureKind};
///
/// fn charge(cents: i64) -> Result<(), Failure> {
///     if cents < 0 {
///         return Err(Failure::permanent("negative total: no retry can fix it"));
///     }
///     let gateway: Result<(), std::io::Error> = Ok(());
///     gateway?; // retryable
///     Ok(())
/// }
///
/// assert_eq!(charge(-1).unwrap_err().kind(), FailureKind::Permanent);
/// let later = Failure::retry_after(Duration::from_secs(5), "rate limited");
/// assert_eq!(later.kind(), FailureKind::RetryAfter(Duration::from_secs(5)));
/// ```
#[derive(Debug)]
pub struct Failure {
    kind: FailureKind,
    source: BoxError,
}

impl Failure {
    /// A failure the retry policy may try again.
    pub fn retryable(source: impl Into<BoxError>) -> Self {
        Self {
            kind: FailureKind::Retryable,
            source: source.into(),
        }
    }

    /// A failure no retry can fix: the message goes to the dead letters at once.
    pub fn permanent(source: impl Into<BoxError>) -> Self {
        Self {
            kind: FailureKind::Permanent,
            source: source.into(),
        }
    }

    /// A failure to try again after `delay` (still within the failure budget).
    pub fn retry_after(delay: Duration, source: impl Into<BoxError>) -> Self {
        Self {
            kind: FailureKind::RetryAfter(delay),
            source: source.into(),
        }
    }

    /// What the handler asked for.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    /// The underlying error.
    pub fn source_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            FailureKind::Retryable => write!(f, "{}", self.source),
            FailureKind::RetryAfter(delay) => {
                write!(f, "{} (retry after {delay:?})", self.source)
            }
            FailureKind::Permanent => write!(f, "{} (permanent)", self.source),
        }
    }
}

impl<E> From<E> for Failure
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn from(err: E) -> Self {
        Failure::retryable(err)
    }
}

/// A [`Failure`] as an error object, so it travels through tower layers.
#[derive(Debug)]
struct FailureError(Failure);

impl std::fmt::Display for FailureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for FailureError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0.source)
    }
}

impl From<Failure> for BoxError {
    fn from(failure: Failure) -> Self {
        Box::new(FailureError(failure))
    }
}

/// How the runtime treats an error that left a subscriber's stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Try again; with a delay when the handler asked for one.
    Retry(Option<Duration>),
    /// The payload did not decode: dead letters at once.
    Undecodable,
    /// The handler said no retry can help: dead letters at once.
    Permanent,
}

/// Classifies `err`, looking through the wrappers flowgate's own layers add.
pub(crate) fn classify(err: &BoxError) -> Class {
    classify_dyn(&**err)
}

fn classify_dyn(mut current: &(dyn std::error::Error + 'static)) -> Class {
    while let Some(retried) = current.downcast_ref::<Retried>() {
        current = retried.last_error();
    }
    if let Some(handler) = current.downcast_ref::<HandlerError>() {
        return classify_handler_error(handler);
    }
    failure_class(current).unwrap_or(Class::Retry(None))
}

/// Classifies what a handler call failed with.
pub(crate) fn classify_handler_error(err: &HandlerError) -> Class {
    match err {
        HandlerError::Decode(_) => Class::Undecodable,
        HandlerError::Failed(inner) => classify_dyn(&**inner),
        // The same message builds the same parameters: retrying helps only
        // when the extractor says so.
        HandlerError::Rejected { source, .. } => {
            failure_class(&**source).unwrap_or(Class::Permanent)
        }
        _ => Class::Retry(None),
    }
}

/// The class a [`Failure`] asks for, when `err` is one.
fn failure_class(err: &(dyn std::error::Error + 'static)) -> Option<Class> {
    let FailureError(failure) = err.downcast_ref::<FailureError>()?;
    Some(match failure.kind {
        FailureKind::Retryable => Class::Retry(None),
        FailureKind::RetryAfter(delay) => Class::Retry(Some(delay)),
        FailureKind::Permanent => Class::Permanent,
    })
}

/// The attempts an error reports having used, when flowgate's retry layer
/// made more than one.
pub(crate) fn attempts_reported(err: &BoxError) -> Option<u32> {
    err.downcast_ref::<Retried>().map(Retried::attempt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(failure: Failure) -> BoxError {
        Box::new(HandlerError::Failed(failure.into()))
    }

    #[test]
    fn classification_looks_through_handler_and_retry_wrappers() {
        assert_eq!(classify(&boxed(Failure::permanent("no"))), Class::Permanent);
        assert_eq!(
            classify(&boxed(Failure::retry_after(
                Duration::from_secs(3),
                "later"
            ))),
            Class::Retry(Some(Duration::from_secs(3)))
        );
        assert_eq!(
            classify(&boxed(Failure::retryable("x"))),
            Class::Retry(None)
        );
        let plain: BoxError = Box::new(HandlerError::Failed("io".into()));
        assert_eq!(classify(&plain), Class::Retry(None));
        let decode: BoxError = Box::new(HandlerError::Decode(crate::DecodeError::new(
            "json",
            "T",
            "bad".into(),
        )));
        assert_eq!(classify(&decode), Class::Undecodable);
        let retried: BoxError = Box::new(Retried::new(4, boxed(Failure::permanent("no"))));
        assert_eq!(classify(&retried), Class::Permanent);
        assert_eq!(attempts_reported(&retried), Some(4));
    }
}
