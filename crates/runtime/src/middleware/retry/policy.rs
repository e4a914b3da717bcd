//! [`RetryPolicy`]: how many attempts, how far apart, and which wait in-process.

use std::time::Duration;

use super::Backoff;

/// How a subscriber retries failed attempts.
///
/// ```
/// use std::time::Duration;
/// use flowgate::middleware::retry::RetryPolicy;
///
/// let policy = RetryPolicy::default().in_process_limit(Duration::from_millis(500));
/// assert_eq!(policy.backoff().initial, Duration::from_millis(100));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    backoff: Backoff,
    in_process_limit: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            backoff: Backoff::default(),
            in_process_limit: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// No in-process retries: every failure goes back to the broker as a nak
    /// with the backoff delay.
    pub fn broker_only() -> Self {
        Self {
            in_process_limit: Duration::ZERO,
            ..Self::default()
        }
    }

    /// Uses `backoff` for the delays.
    pub fn backoff_with(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Retries in-process when the delay is at most `limit`; longer delays
    /// become a nak with that delay.
    pub fn in_process_limit(mut self, limit: Duration) -> Self {
        self.in_process_limit = limit;
        self
    }

    /// The backoff schedule.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// The longest delay waited in-process.
    pub fn in_process_wait_limit(&self) -> Duration {
        self.in_process_limit
    }

    /// Whether a retry after `delay` happens in-process.
    pub(crate) fn waits_in_process(&self, delay: Duration) -> bool {
        delay <= self.in_process_limit
    }
}
