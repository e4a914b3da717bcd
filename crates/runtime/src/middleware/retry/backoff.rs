//! Exponential backoff with jitter.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Exponential backoff: `initial × multiplier^(attempt-1)`, at most `max`,
/// spread by ± `jitter` (a fraction) so failing consumers do not retry in step.
///
/// ```
/// use std::time::Duration;
/// let backoff = flowgate::middleware::retry::Backoff::default().without_jitter();
/// assert_eq!(backoff.delay(1), Duration::from_millis(100));
/// assert_eq!(backoff.delay(3), Duration::from_millis(400));
/// assert_eq!(backoff.delay(50), Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The delay after the first failed attempt.
    pub initial: Duration,
    /// The growth per attempt.
    pub multiplier: f64,
    /// The longest delay.
    pub max: Duration,
    /// The spread around each delay, as a fraction (0.2 = ±20 %).
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            max: Duration::from_secs(30),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The same schedule with no randomness.
    pub fn without_jitter(mut self) -> Self {
        self.jitter = 0.0;
        self
    }

    /// The delay after failed attempt number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let base = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = base.min(self.max.as_secs_f64());
        let spread = if self.jitter > 0.0 {
            1.0 + self.jitter * (2.0 * unit_random() - 1.0)
        } else {
            1.0
        };
        Duration::from_secs_f64((capped * spread).max(0.0)).min(self.max)
    }

    /// The longest delay after failed attempt `attempt`, jitter at its top.
    pub fn delay_ceiling(&self, attempt: u32) -> Duration {
        let top = Backoff {
            jitter: 0.0,
            ..*self
        };
        top.delay(attempt)
            .mul_f64(1.0 + self.jitter.max(0.0))
            .min(self.max)
    }
}

/// A number in [0, 1) from the standard library's randomly keyed hasher.
fn unit_random() -> f64 {
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_spread() {
        let backoff = Backoff::default();
        for _ in 0..200 {
            let delay = backoff.delay(2);
            assert!(delay >= Duration::from_millis(160), "{delay:?}");
            assert!(delay <= Duration::from_millis(240), "{delay:?}");
        }
    }
}
