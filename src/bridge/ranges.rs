//! Sets of sequence numbers kept as merged inclusive ranges.
//!
//! A receiver remembers which numbers of a sender's stream it delivered and handled;
//! numbers come mostly in runs, so a set of runs stays small whatever the rate.

use std::collections::BTreeMap;

/// A set of `u64`, stored as disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RangeSet {
    /// Start to end, inclusive; no two touch.
    runs: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// Adds `lo..=hi`.
    pub(crate) fn insert(&mut self, lo: u64, hi: u64) {
        debug_assert!(lo <= hi);
        let (mut lo, mut hi) = (lo, hi);
        // A run that starts before `lo` and reaches it (or touches it) joins.
        if let Some((&start, &end)) = self.runs.range(..=lo).next_back()
            && end.saturating_add(1) >= lo
        {
            lo = start;
            hi = hi.max(end);
        }
        // Runs that start inside `lo..=hi + 1` join.
        let joined: Vec<(u64, u64)> = self
            .runs
            .range(lo..=hi.saturating_add(1))
            .map(|(&s, &e)| (s, e))
            .collect();
        for (start, end) in joined {
            self.runs.remove(&start);
            hi = hi.max(end);
        }
        self.runs.insert(lo, hi);
    }

    /// Removes `lo..=hi`.
    pub(crate) fn remove(&mut self, lo: u64, hi: u64) {
        let touched: Vec<(u64, u64)> = self
            .runs
            .range(..=hi)
            .rev()
            .take_while(|(_, e)| **e >= lo)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (start, end) in touched {
            self.runs.remove(&start);
            if start < lo {
                self.runs.insert(start, lo - 1);
            }
            if end > hi {
                self.runs.insert(hi + 1, end);
            }
        }
    }

    /// Whether every number of `lo..=hi` is in the set.
    pub(crate) fn contains_all(&self, lo: u64, hi: u64) -> bool {
        self.runs
            .range(..=lo)
            .next_back()
            .is_some_and(|(_, &end)| end >= hi)
    }

    /// Whether `n` is in the set.
    pub(crate) fn contains(&self, n: u64) -> bool {
        self.contains_all(n, n)
    }

    /// Forgets every number below `floor`.
    pub(crate) fn forget_below(&mut self, floor: u64) {
        let mut kept = self.runs.split_off(&floor);
        if let Some((_, end)) = self.runs.iter().next_back()
            && *end >= floor
        {
            kept.insert(floor, *end);
        }
        self.runs = kept;
    }

    /// Forgets the lowest runs until at most `max` are left; returns the highest number
    /// forgotten.
    pub(crate) fn forget_oldest(&mut self, max: usize) -> Option<u64> {
        let mut forgotten = None;
        while self.runs.len() > max {
            forgotten = self.runs.pop_first().map(|(_, end)| end);
        }
        forgotten
    }

    /// How many runs the set holds.
    #[cfg(test)]
    pub(crate) fn runs(&self) -> usize {
        self.runs.len()
    }

    /// The runs, lowest first.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.runs.iter().map(|(&s, &e)| (s, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn runs_merge_when_they_touch_and_split_when_cut() {
        let mut set = RangeSet::default();
        set.insert(10, 12);
        set.insert(14, 15);
        assert_eq!(set.runs(), 2);
        set.insert(13, 13);
        assert_eq!(set.iter().collect::<Vec<_>>(), [(10, 15)]);
        set.remove(12, 12);
        assert_eq!(set.iter().collect::<Vec<_>>(), [(10, 11), (13, 15)]);
        assert!(set.contains_all(13, 15) && !set.contains_all(11, 13));
        set.forget_below(14);
        assert_eq!(set.iter().collect::<Vec<_>>(), [(14, 15)]);
    }

    proptest! {
        /// Whatever is inserted, removed and forgotten, the set holds exactly what a
        /// plain set of numbers would, in disjoint runs that never touch.
        #[test]
        fn behaves_as_a_set_of_numbers(
            ops in prop::collection::vec((0u8..4, 0u64..200, 0u64..6), 1..80)
        ) {
            let mut set = RangeSet::default();
            let mut model = BTreeSet::new();
            for (op, lo, len) in ops {
                let hi = lo + len;
                match op {
                    0 | 1 => { set.insert(lo, hi); model.extend(lo..=hi); }
                    2 => { set.remove(lo, hi); for n in lo..=hi { model.remove(&n); } }
                    _ => { set.forget_below(lo); model.retain(|n| *n >= lo); }
                }
                let mut last_end: Option<u64> = None;
                for (s, e) in set.iter() {
                    prop_assert!(s <= e);
                    if let Some(prev) = last_end { prop_assert!(s > prev + 1, "runs touch"); }
                    last_end = Some(e);
                }
                for n in 0..210 {
                    prop_assert_eq!(set.contains(n), model.contains(&n), "{}", n);
                }
                prop_assert_eq!(set.contains_all(lo, hi), (lo..=hi).all(|n| model.contains(&n)));
            }
        }
    }
}
