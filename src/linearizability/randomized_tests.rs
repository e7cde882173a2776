//! Randomized histories with answers known by construction: run the [`KvModel`] itself
//! sequentially, record what it did, then widen every operation's interval so the operations
//! overlap. The order they really ran in is still a valid linearization, so the history must
//! be linearizable; make one read return a value nobody wrote and it must not be.

use std::collections::BTreeMap;

use super::*;

type Input = KvInput<&'static str, u32>;
type Output = KvOutput<u32>;
type History = Vec<Operation<Input, Output>>;

/// Values written are drawn from `0..VALUE_COUNT`; few enough that compare-and-set succeeds
/// often and different writes of the same value are common.
const VALUE_COUNT: u64 = 6;

/// A value no generated operation writes.
const NEVER_WRITTEN: u32 = 1_000;

/// Operation `position` of the sequential run takes effect inside
/// `[position * SPACING, position * SPACING + SPACING / 2]`.
const SPACING: u64 = 10;

/// A tiny deterministic generator (xorshift64*), so each seed always gives the same history.
struct Random(u64);

impl Random {
    fn new(seed: u64) -> Self {
        // Xorshift must not start at zero; mixing in a constant also spreads nearby seeds.
        Random(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..bound`; `bound` must not be zero.
    fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    fn value(&mut self) -> u32 {
        self.below(VALUE_COUNT) as u32
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// `length` operations run one at a time against the model, on keys drawn from `keys`. About
/// one in ten is failed (and not applied) and one in ten unknown (and applied).
fn sequential_history(random: &mut Random, length: usize, keys: &[&'static str]) -> History {
    let model = KvModel::new();
    let mut store: BTreeMap<&'static str, Option<u32>> = BTreeMap::new();
    let mut history = Vec::with_capacity(length);
    for position in 0..length as u64 {
        let key = *random.pick(keys);
        let current = store.entry(key).or_default();
        let input = match random.below(4) {
            0 => KvInput::Get { key },
            1 => KvInput::Put { key, value: random.value() },
            2 => {
                let expected = match random.below(3) {
                    0 => *current,
                    1 => None,
                    _ => Some(random.value()),
                };
                KvInput::Cas { key, expected, new: random.value() }
            }
            _ => KvInput::Delete { key },
        };
        let client_id = random.below(8);
        let call_time = position * SPACING;
        let operation = match random.below(10) {
            0 => Operation::failed(client_id, input, call_time),
            1 => {
                *current = model.step(current, &input).0;
                Operation::unknown(client_id, input, call_time)
            }
            _ => {
                let (next, output) = model.step(current, &input);
                *current = next;
                Operation::ok(client_id, input, call_time, call_time + SPACING / 2, output)
            }
        };
        history.push(operation);
    }
    history
}

/// Moves every call up to `widening` earlier and every return up to `widening` later. Each
/// operation's interval still contains the instant it took effect in the sequential run.
fn widen(random: &mut Random, history: &mut History, widening: u64) {
    for operation in history {
        operation.call_time = operation.call_time.saturating_sub(random.below(widening + 1));
        operation.return_time += random.below(widening + 1);
    }
}

/// Makes one answered read, chosen among the last half of the history when there is one
/// there, return [`NEVER_WRITTEN`]. Returns whether a read was found.
fn corrupt_a_read(random: &mut Random, history: &mut History) -> bool {
    let reads: Vec<usize> = history
        .iter()
        .enumerate()
        .filter(|(_, operation)| {
            matches!(operation.input, KvInput::Get { .. })
                && matches!(operation.outcome, Outcome::Ok(_))
        })
        .map(|(index, _)| index)
        .collect();
    let late: Vec<usize> =
        reads.iter().copied().filter(|&index| index >= history.len() / 2).collect();
    let candidates = if late.is_empty() { &reads } else { &late };
    if candidates.is_empty() {
        return false;
    }
    let chosen = *random.pick(candidates);
    history[chosen].outcome = Outcome::Ok(KvOutput::Value(Some(NEVER_WRITTEN)));
    true
}

#[test]
fn widened_sequential_histories_are_linearizable_until_a_read_is_corrupted() {
    let key_sets: [&[&'static str]; 3] = [&["k"], &["k", "l"], &["k", "l", "m"]];
    let mut corrupted = 0;
    for seed in 0..60 {
        let mut random = Random::new(seed);
        let keys = key_sets[seed as usize % key_sets.len()];
        let length = 20 + random.below(40) as usize;
        let mut history = sequential_history(&mut random, length, keys);
        let widening = random.below(6 * SPACING);
        widen(&mut random, &mut history, widening);

        let result = check_with_limit(&KvModel::new(), &history, 1_000_000);
        assert_eq!(result, Ok(CheckResult::Linearizable), "seed {seed}: {history:#?}");

        if corrupt_a_read(&mut random, &mut history) {
            corrupted += 1;
            let result = check_with_limit(&KvModel::new(), &history, 1_000_000);
            assert!(
                matches!(result, Ok(CheckResult::NotLinearizable { .. })),
                "seed {seed}: a read of a value never written was accepted: {result:?}"
            );
        }
    }
    assert!(corrupted >= 50, "only {corrupted} histories had a read to corrupt");
}

#[test]
fn memoization_keeps_two_hundred_concurrent_operations_tractable() {
    let mut random = Random::new(2017);
    let mut history = sequential_history(&mut random, 200, &["a", "b", "c"]);
    // Every interval reaches up to 10 operations of the sequential run on either side, so
    // each operation overlaps about 20 others.
    widen(&mut random, &mut history, 10 * SPACING);
    // About 22,000 configurations suffice in the worst partition; the limit only turns a
    // regression (say, memoization lost) into a failure rather than a hang.
    let limit = 200_000;

    assert_eq!(check_with_limit(&KvModel::new(), &history, limit), Ok(CheckResult::Linearizable));

    // Refuting a history means exhausting every configuration before the bad read's return;
    // without memoization that is every order of the overlapping operations.
    assert!(corrupt_a_read(&mut random, &mut history));
    let result = check_with_limit(&KvModel::new(), &history, limit);
    assert!(matches!(result, Ok(CheckResult::NotLinearizable { .. })), "{result:?}");
}
