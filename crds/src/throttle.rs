//! A warning that may repeat (refused requests, malformed packets) logged at most once
//! per period, with the count of those held back: logs that say what happened without
//! flooding.

use std::time::{Duration, Instant};

/// Lets a repeated warning through at most once per period, counting the ones held back.
pub struct Throttle {
    period: Duration,
    last: Option<Instant>,
    held: u64,
}

impl Throttle {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            last: None,
            held: 0,
        }
    }

    /// `Some(held back since the last one)` when this occurrence should be logged.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < self.period)
        {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_lets_one_through_per_period_and_counts_the_rest() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut t = Throttle::new(s(10));
        assert_eq!(t.allow(t0), Some(0));
        assert_eq!(t.allow(t0 + s(1)), None);
        assert_eq!(t.allow(t0 + s(9)), None);
        assert_eq!(t.allow(t0 + s(10)), Some(2));
        assert_eq!(t.allow(t0 + s(11)), None);
    }
}
