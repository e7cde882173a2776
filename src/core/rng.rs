//! [`Rng`]: the core's only source of randomness, seeded by the caller so that a run can be
//! replayed exactly.
//!
//! SplitMix64 is a dozen lines, statistically sound for jittering timeouts, and keeps the core
//! free of a dependency whose stream could change between versions and break replays.

/// A small deterministic pseudo-random generator (SplitMix64).
#[derive(Clone, Debug)]
pub(crate) struct Rng {
    state: u64,
}

impl Rng {
    /// A generator whose whole output is determined by `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value drawn uniformly from `[low, high)`. `high` must be above `low`.
    pub(crate) fn in_range(&mut self, low: u64, high: u64) -> u64 {
        debug_assert!(low < high, "empty range [{low}, {high})");
        let span = high - low;
        // Multiply-shift maps 64 random bits onto the span without a modulo bias worth noting
        // at these span sizes.
        low + ((u128::from(self.next_u64()) * u128::from(span)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut first = Rng::new(42);
        let mut second = Rng::new(42);
        for _ in 0..100 {
            assert_eq!(first.next_u64(), second.next_u64());
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn range_stays_in_bounds_and_covers_it() {
        let mut rng = Rng::new(7);
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..10_000 {
            let value = rng.in_range(150, 300);
            assert!((150..300).contains(&value));
            seen_low |= value < 160;
            seen_high |= value >= 290;
        }
        assert!(seen_low && seen_high);
    }
}
