//! [`SimRng`]: the simulator's single source of randomness. Every choice of a run (delays,
//! faults, workload, each node's election jitter seed) is drawn from it, so a seed is a run.

use crate::core::rng::Rng;

/// The core's SplitMix64 generator, with helpers for the simulator's kinds of choice. A
/// [`Workload`](super::Workload) draws its clients' choices from it.
#[derive(Clone, Debug)]
pub struct SimRng {
    generator: Rng,
}

impl SimRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        SimRng { generator: Rng::new(seed ^ 0x5EED_5EED_5EED_5EED) }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.generator.next_u64()
    }

    /// A value in `[0, bound)`; 0 when `bound` is 0.
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// A value in `[low, high]`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        debug_assert!(low <= high);
        low + self.below(high - low + 1)
    }

    /// True with probability `probability`.
    pub fn chance(&mut self, probability: f64) -> bool {
        probability > 0.0 && ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < probability
    }

    /// A uniformly chosen element, if any.
    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() {
            return None;
        }
        Some(items[self.below(items.len() as u64) as usize])
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for position in (1..items.len()).rev() {
            let other = self.below(position as u64 + 1) as usize;
            items.swap(position, other);
        }
    }
}
