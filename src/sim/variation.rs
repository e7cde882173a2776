//! [`SeedVariation`]: what each seed draws about the cluster besides its faults, so that the
//! corners of the protocol's limits are exercised, not only the defaults: flow control down to
//! one entry per message, one message in flight and tiny byte budgets (per message and in
//! flight); disks whose syncs
//! usually take a millisecond or two but sometimes stall for hundreds (so a leader's own sync
//! can lag far behind its followers'); links with a bandwidth, so large messages queue; and
//! crashes aimed at nodes whose syncs are in flight.

use crate::config::Config;

use super::rng::SimRng;

/// The per-seed draw. Every value comes from the seed's random stream.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SeedVariation {
    /// [`Config::max_append_entries`] for every node.
    pub(crate) max_append_entries: usize,
    /// [`Config::max_inflight_appends`] for every node.
    pub(crate) max_inflight_appends: usize,
    /// [`Config::max_append_bytes`] for every node.
    pub(crate) max_append_bytes: usize,
    /// [`Config::max_inflight_bytes`] for every node (drawn from a stream of its own).
    pub(crate) max_inflight_bytes: u64,
    /// Probability that one sync stalls.
    pub(crate) sync_stall_chance: f64,
    /// Longest stall, in virtual milliseconds.
    pub(crate) max_sync_stall_ms: u64,
    /// Bytes a link carries per virtual millisecond (`None`: unlimited).
    pub(crate) link_bytes_per_ms: Option<u64>,
    /// Probability that a crash picks among the nodes with syncs in flight.
    pub(crate) aimed_crash_chance: f64,
}

impl SeedVariation {
    /// Draws a variation. About one seed in four keeps the production defaults for each
    /// knob, so defaults stay covered too. The in-flight byte budget comes from `flow_rng`,
    /// so that `rng` gives every other knob what it gave before the budget existed.
    pub(crate) fn draw(
        rng: &mut SimRng,
        flow_rng: &mut SimRng,
        defaults: &Config,
    ) -> SeedVariation {
        let pick_usize =
            |rng: &mut SimRng, choices: &[usize]| choices[rng.below(choices.len() as u64) as usize];
        SeedVariation {
            max_append_entries: pick_usize(rng, &[1, 2, 16, defaults.max_append_entries]),
            max_inflight_appends: pick_usize(rng, &[1, 2, 8, defaults.max_inflight_appends]),
            max_append_bytes: pick_usize(rng, &[1, 100, 2_000, defaults.max_append_bytes]),
            sync_stall_chance: [0.0, 0.002, 0.01, 0.05][rng.below(4) as usize],
            max_sync_stall_ms: rng.between(100, 600),
            link_bytes_per_ms: [None, Some(50), Some(1_000), Some(20_000)][rng.below(4) as usize],
            aimed_crash_chance: [0.0, 0.5, 0.9][rng.below(3) as usize],
            // One byte: one entry at a time; a few entries; dozens; the default.
            max_inflight_bytes: [1, 200, 4_000, defaults.max_inflight_bytes]
                [flow_rng.below(4) as usize],
        }
    }

    /// `config` with this variation's flow-control limits.
    pub(crate) fn apply_to(&self, config: Config) -> Config {
        Config {
            max_append_entries: self.max_append_entries,
            max_inflight_appends: self.max_inflight_appends,
            max_append_bytes: self.max_append_bytes,
            max_inflight_bytes: self.max_inflight_bytes,
            ..config
        }
    }

    /// How long a sync takes on this seed's disks: 0 to 2 ms, or now and then a stall.
    pub(crate) fn sync_latency_ms(&self, rng: &mut SimRng) -> u64 {
        if rng.chance(self.sync_stall_chance) {
            rng.between(self.max_sync_stall_ms / 4, self.max_sync_stall_ms)
        } else {
            rng.between(0, 2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_draw_is_a_valid_config_and_the_extremes_come_up() {
        let (mut rng, mut flow_rng) = (SimRng::new(9), SimRng::new(10));
        let defaults = Config::default();
        let mut smallest = (usize::MAX, usize::MAX, usize::MAX, u64::MAX);
        for _ in 0..200 {
            let variation = SeedVariation::draw(&mut rng, &mut flow_rng, &defaults);
            assert_eq!(variation.apply_to(defaults.clone()).validate(), Ok(()));
            smallest = (
                smallest.0.min(variation.max_append_entries),
                smallest.1.min(variation.max_inflight_appends),
                smallest.2.min(variation.max_append_bytes),
                smallest.3.min(variation.max_inflight_bytes),
            );
        }
        assert_eq!(smallest, (1, 1, 1, 1), "the smallest limits are drawn");
    }
}
