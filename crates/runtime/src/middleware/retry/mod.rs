//! In-process retries with exponential backoff and jitter, within the one
//! failure budget (`max_deliver`) that broker redeliveries count against too.
//!
//! An attempt that fails with a retryable error is tried again in-process
//! when the backoff delay is short (at most [`RetryPolicy::in_process_limit`]);
//! a longer delay goes back to the broker as a nak with that delay, so the
//! message does not hold a slot while it waits. Every attempt, in-process or
//! redelivered, counts against the budget; when it is spent, or the error is
//! permanent, the message goes to the dead letters.

mod backoff;
mod layer;
mod policy;

pub use backoff::Backoff;
pub(crate) use layer::{gave_up_error, Attempt, Attempting, GaveUp, Schedule};
pub use layer::{Retry, RetryFuture, RetryLayer};
pub use policy::RetryPolicy;

use crate::BoxError;

/// The error a retried request ends with: the last attempt's error and the
/// number of that attempt.
#[derive(Debug)]
pub struct Retried {
    attempt: u32,
    last_error: BoxError,
}

impl Retried {
    pub(crate) fn new(attempt: u32, last_error: BoxError) -> Self {
        Self {
            attempt,
            last_error,
        }
    }

    /// The number of the last attempt (1 is the first delivery's first try).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The last attempt's error.
    pub fn last_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.last_error
    }
}

impl std::fmt::Display for Retried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "attempt {} failed: {}", self.attempt, self.last_error)
    }
}

impl std::error::Error for Retried {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.last_error)
    }
}
