//! Slow start: the weight a backend that just came up balances with. Pure.
//!
//! HAProxy's `slowstart`: the effective weight grows linearly from a small value to the
//! configured one over the period. Weights are scaled by [`SCALE`] inside the balancer,
//! so even a weight-1 backend ramps (from 1/16) instead of jumping to full at once; the
//! scale changes no decision outside a ramp (every algorithm compares weight ratios).

/// Balancer weight units per configured weight unit.
pub const SCALE: u32 = 16;

/// The scaled weight of a backend of configured `weight` that came up at `since_ms`
/// (None: not ramping), `now_ms` on the same clock, for a ramp of `period_ms` (0: off).
/// At least 1 while ramping (so the backend gets some traffic); 0 only for weight 0.
pub fn effective(weight: u32, since_ms: Option<u64>, period_ms: u64, now_ms: u64) -> u32 {
    let full = weight.saturating_mul(SCALE);
    let Some(since) = since_ms else {
        return full;
    };
    let elapsed = now_ms.saturating_sub(since);
    if weight == 0 || period_ms == 0 || elapsed >= period_ms {
        return full;
    }
    // Rounded up, so the ramp reaches full weight exactly at the end of the period.
    let scaled = (u64::from(full) * elapsed).div_ceil(period_ms);
    u32::try_from(scaled).unwrap_or(full).clamp(1, full)
}

/// A scaled weight in configured units, for `/status`.
pub fn display(scaled: u32) -> f64 {
    f64::from(scaled) / f64::from(SCALE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramps_linearly_from_at_least_one_to_full() {
        // (weight, since, period, now, scaled effective weight)
        let cases = [
            (1, None, 2_000, 5_000, 16),
            (1, Some(5_000), 0, 5_000, 16),
            (1, Some(5_000), 2_000, 5_000, 1),
            (1, Some(5_000), 2_000, 6_000, 8),
            (1, Some(5_000), 2_000, 6_999, 16),
            (1, Some(5_000), 2_000, 7_000, 16),
            (1, Some(5_000), 2_000, 90_000, 16),
            (10, Some(0), 1_000, 100, 16),
            (10, Some(0), 1_000, 1, 1),
            (10, Some(0), 1_000, 501, 81),
            (0, Some(0), 1_000, 500, 0),
            // A clock that went backwards counts as no time elapsed.
            (4, Some(9_000), 1_000, 8_000, 1),
            // Huge weights saturate instead of overflowing.
            (u32::MAX, Some(0), 1_000, 500, u32::MAX / 2 + 1),
        ];
        for (weight, since, period, now, want) in cases {
            assert_eq!(
                effective(weight, since, period, now),
                want,
                "{weight} {since:?} {period} {now}"
            );
        }
    }

    #[test]
    fn displays_in_configured_units() {
        assert_eq!(display(16), 1.0);
        assert_eq!(display(8), 0.5);
        assert_eq!(display(160), 10.0);
    }
}
