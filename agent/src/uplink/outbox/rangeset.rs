//! A set of `u64` record ids kept as disjoint half-open ranges.
//!
//! The outbox resolves (acknowledges or drops) records mostly in order, so
//! the ids it has to remember collapse into a handful of ranges. Pure data
//! structure: no I/O, no logging. Memory is one map entry per range.

use std::collections::BTreeMap;

/// Disjoint, non-adjacent half-open ranges `[start, end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// start → end (exclusive). Invariant: ranges neither overlap nor
    /// touch (touching ranges are merged), and `start < end`.
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// An empty set.
    pub fn new() -> RangeSet {
        RangeSet::default()
    }

    /// Whether the set holds no id.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Number of ranges (not ids).
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// Number of ids in the set.
    pub fn id_count(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: u64) -> bool {
        self.ranges
            .range(..=id)
            .next_back()
            .is_some_and(|(_, &end)| id < end)
    }

    /// Adds one id.
    pub fn insert(&mut self, id: u64) {
        if let Some(end) = id.checked_add(1) {
            self.insert_range(id, end);
        }
    }

    /// Adds `[start, end)`; an empty or reversed range is ignored.
    pub fn insert_range(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let mut start = start;
        let mut end = end;
        // Merge with a range that starts at or before `start` and reaches it.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
            }
        }
        // Swallow every range that starts inside (or right after) the new one.
        let swallowed: Vec<(u64, u64)> = self
            .ranges
            .range(start..=end)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in swallowed {
            self.ranges.remove(&s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
    }

    /// Forgets every id below `min`.
    pub fn remove_below(&mut self, min: u64) {
        let below: Vec<(u64, u64)> = self.ranges.range(..min).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in below {
            self.ranges.remove(&s);
            if e > min {
                self.ranges.insert(min, e);
            }
        }
    }

    /// The ranges in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&s, &e)| (s, e))
    }

    /// The largest id in the set.
    pub fn max(&self) -> Option<u64> {
        self.ranges.iter().next_back().map(|(_, &e)| e - 1)
    }

    /// Empties the set.
    pub fn clear(&mut self) {
        self.ranges.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(s: &RangeSet) -> Vec<(u64, u64)> {
        s.iter().collect()
    }

    #[test]
    fn merges_adjacent_and_overlapping() {
        let mut s = RangeSet::new();
        s.insert(5);
        s.insert(7);
        assert_eq!(ranges(&s), vec![(5, 6), (7, 8)]);
        s.insert(6);
        assert_eq!(ranges(&s), vec![(5, 8)]);
        s.insert_range(1, 3);
        s.insert_range(2, 5);
        assert_eq!(ranges(&s), vec![(1, 8)]);
        s.insert_range(10, 20);
        s.insert_range(0, 30);
        assert_eq!(ranges(&s), vec![(0, 30)]);
        assert_eq!(s.id_count(), 30);
        assert_eq!(s.max(), Some(29));
    }

    #[test]
    fn contains_and_remove_below() {
        let mut s = RangeSet::new();
        s.insert_range(10, 20);
        s.insert_range(30, 40);
        assert!(!s.contains(9));
        assert!(s.contains(10));
        assert!(s.contains(19));
        assert!(!s.contains(20));
        assert!(s.contains(39));
        s.remove_below(15);
        assert_eq!(ranges(&s), vec![(15, 20), (30, 40)]);
        s.remove_below(35);
        assert_eq!(ranges(&s), vec![(35, 40)]);
        s.remove_below(100);
        assert!(s.is_empty());
    }

    #[test]
    fn ignores_empty_ranges_and_overflow() {
        let mut s = RangeSet::new();
        s.insert_range(5, 5);
        s.insert_range(6, 2);
        s.insert(u64::MAX);
        assert!(s.is_empty());
    }

    #[test]
    fn matches_a_naive_set() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut s = RangeSet::new();
        let mut naive = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            let a = rng.u64(0..200);
            let b = a + rng.u64(0..5);
            s.insert_range(a, b);
            naive.extend(a..b);
            if rng.u8(..) < 10 {
                let m = rng.u64(0..200);
                s.remove_below(m);
                naive.retain(|&x| x >= m);
            }
        }
        for x in 0..210 {
            assert_eq!(s.contains(x), naive.contains(&x), "{x}");
        }
        assert_eq!(s.id_count(), naive.len() as u64);
        // Ranges are disjoint and not touching.
        let r = ranges(&s);
        for w in r.windows(2) {
            assert!(w[0].1 < w[1].0, "{r:?}");
        }
    }
}
