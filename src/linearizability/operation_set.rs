//! [`OperationSet`]: which operations of a partition the search has linearized so far, as a
//! bitset that can be hashed as part of a memoized configuration.

/// A set of operation numbers `0..capacity`, one bit each.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct OperationSet {
    words: Vec<u64>,
}

impl OperationSet {
    /// The empty set, able to hold the numbers `0..capacity`.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        OperationSet { words: vec![0; capacity.div_ceil(64)] }
    }

    /// Adds `operation` to the set.
    pub(crate) fn insert(&mut self, operation: usize) {
        let (word, bit) = Self::position(operation);
        debug_assert!(word < self.words.len(), "operation {operation} is past the set's capacity");
        if let Some(word) = self.words.get_mut(word) {
            *word |= bit;
        }
    }

    /// Removes `operation` from the set.
    pub(crate) fn remove(&mut self, operation: usize) {
        let (word, bit) = Self::position(operation);
        debug_assert!(word < self.words.len(), "operation {operation} is past the set's capacity");
        if let Some(word) = self.words.get_mut(word) {
            *word &= !bit;
        }
    }

    /// Whether `operation` is in the set.
    #[cfg(test)]
    pub(crate) fn contains(&self, operation: usize) -> bool {
        let (word, bit) = Self::position(operation);
        self.words.get(word).is_some_and(|word| word & bit != 0)
    }

    /// The word holding `operation`'s bit, and that bit as a mask.
    fn position(operation: usize) -> (usize, u64) {
        (operation / 64, 1 << (operation % 64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_and_remove_touch_only_their_own_bit() {
        let mut set = OperationSet::with_capacity(130);
        for operation in [0, 63, 64, 129] {
            set.insert(operation);
        }
        for operation in 0..130 {
            assert_eq!(set.contains(operation), [0, 63, 64, 129].contains(&operation));
        }
        set.remove(64);
        assert!(!set.contains(64));
        assert!(set.contains(63) && set.contains(129));
    }

    #[test]
    fn equal_contents_make_equal_sets() {
        let mut first = OperationSet::with_capacity(70);
        let mut second = OperationSet::with_capacity(70);
        first.insert(3);
        first.insert(66);
        second.insert(66);
        second.insert(3);
        assert_eq!(first, second);
        second.remove(3);
        assert_ne!(first, second);
    }

    #[test]
    fn empty_capacity_holds_nothing() {
        let set = OperationSet::with_capacity(0);
        assert!(!set.contains(0));
    }
}
