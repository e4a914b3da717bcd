//! A bound on how many log lines of one kind a subscriber writes per second,
//! so a failing dependency does not flood the log with one line per message.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Lines allowed per second; the ones over it are counted and reported with
/// the next line allowed.
const PER_SECOND: u32 = 10;

/// Allows [`PER_SECOND`] lines in each second (on tokio's clock), counting
/// the ones it holds back.
#[derive(Debug)]
pub(crate) struct LogBudget {
    origin: Instant,
    /// The second (since `origin`) the count is for.
    second: AtomicU64,
    /// Lines allowed in that second.
    used: AtomicU32,
    /// Lines held back since the last one allowed.
    suppressed: AtomicU64,
}

impl Default for LogBudget {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            second: AtomicU64::new(0),
            used: AtomicU32::new(0),
            suppressed: AtomicU64::new(0),
        }
    }
}

impl LogBudget {
    /// `Some(lines held back before this one)` when a line may be written
    /// now; `None` when it is held back.
    pub(crate) fn allow(&self) -> Option<u64> {
        let elapsed = Instant::now().duration_since(self.origin);
        let second = (elapsed.as_millis() / WINDOW.as_millis()) as u64;
        if self.second.swap(second, Ordering::AcqRel) != second {
            self.used.store(0, Ordering::Release);
        }
        if self.used.fetch_add(1, Ordering::AcqRel) < PER_SECOND {
            Some(self.suppressed.swap(0, Ordering::AcqRel))
        } else {
            self.suppressed.fetch_add(1, Ordering::AcqRel);
            None
        }
    }
}

/// How long one budget of [`PER_SECOND`] lines lasts.
const WINDOW: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ten_lines_a_second_and_a_count_of_the_rest() {
        let budget = LogBudget::default();
        for _ in 0..PER_SECOND {
            assert_eq!(budget.allow(), Some(0));
        }
        assert_eq!(budget.allow(), None);
        assert_eq!(budget.allow(), None);
        tokio::time::advance(WINDOW).await;
        assert_eq!(
            budget.allow(),
            Some(2),
            "the next line tells how many were held back"
        );
        assert_eq!(budget.allow(), Some(0));
    }
}
