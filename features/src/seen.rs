//! A bounded memory of entity keys that have left a table: the last `capacity` keys
//! recorded, each held exactly with when it was first seen and whether it was new, the
//! oldest record forgotten first.
//!
//! The endpoint inventory records every endpoint it evicts here, so that an endpoint that
//! is called rarely (a nightly report, a monthly export) and is dropped while idle is
//! recognised as seen before when it comes back, instead of being flagged a new endpoint
//! (`f_endpoint_new`) every time. It comes back with its first-seen time and its "new"
//! flag: one evicted within its new period (by the cap, under a flood of other paths) is
//! still new for the rest of that period, and the inventory reports when it was first
//! seen, not when it returned. The table itself knows the endpoints it holds; this
//! memory only has to hold the ones that left it, and it is touched only when an endpoint
//! is evicted or inserted, never per event.
//!
//! Why a ring of the last keys recorded with an index over it, rather than a Bloom filter
//! or buckets of fingerprints:
//!
//! - A Bloom filter cannot forget: under a flood of random paths (each one an endpoint
//!   evicted in turn) its bits fill up and more and more endpoints never seen read as seen
//!   before, which would hide exactly the endpoints `f_endpoint_new` is there to show.
//!   Here a flood only pushes the oldest records out: at worst a returning endpoint reads
//!   as new again, and a key never recorded reads as seen only when its 64-bit key equals
//!   one recorded, the same collision that would already make two endpoints share one
//!   table entry.
//! - Small buckets with replacement when full forget too, but which key a full bucket
//!   gives up depends on which keys share it, and so on the secret placement (below): the
//!   features would depend on a random number drawn per process, when they must be a pure
//!   function of the event stream (two fresh stages give the same output). The ring
//!   always forgets the oldest record, wherever the keys are placed.
//!
//! Keys are hashes of paths that clients choose, under public seeds, so the index places
//! them by the key mixed with a secret of its own, like the entity tables (see
//! [`crate::table`]): nobody can pick keys that make one long probe run. The secret
//! decides positions only, never what is remembered.

use crate::table::Index;

/// Index positions are capped at this many (32 MiB), reached at a table cap of 262,144
/// endpoints; beyond it the memory holds 1,572,864 keys, still six times that cap.
const MAX_POSITIONS: usize = 1 << 21;

/// What is kept of an entity that left the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Remembered {
    /// When it was first seen, µs.
    pub first_seen: i64,
    /// Whether it was new (an endpoint first seen after the warm-up).
    pub new: bool,
}

/// The last keys recorded, at most `capacity` of them.
#[derive(Debug)]
pub(crate) struct SeenKeys {
    /// Key → position in `ring` of its latest record.
    index: Index,
    /// Records in the order made; once full, `ring[next]` is the oldest and the next one
    /// takes its place.
    ring: Vec<(u64, Remembered)>,
    next: usize,
    capacity: usize,
}

impl SeenKeys {
    /// A memory for a table of at most `table_cap` entities: three quarters of the
    /// smallest power of two at least four times the cap (so between three and six times
    /// the cap, with the index at most 3/4 full), at most [`MAX_POSITIONS`] positions.
    /// Several times the cap, because the records are of endpoints that left the table,
    /// and one-off paths (a scanner's 404s that each became an endpoint) leave it too: a
    /// few thousand of those should not push out the real endpoints that come back.
    pub(crate) fn for_table(table_cap: usize) -> Self {
        let positions = table_cap
            .saturating_mul(4)
            .next_power_of_two()
            .clamp(16, MAX_POSITIONS);
        Self::with_capacity(positions / 4 * 3)
    }

    /// A memory of the last `capacity` (at least 1) keys recorded, all its room taken
    /// now.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        Self {
            index: Index::with_room(capacity),
            ring: Vec::with_capacity(capacity),
            next: 0,
            capacity,
        }
    }

    /// Records `key` with `what` as the newest record (a key recorded before moves up to
    /// newest, with what this record says).
    pub(crate) fn remember(&mut self, key: u64, what: Remembered) {
        let pos = self.next;
        if self.ring.len() < self.capacity {
            self.ring.push((key, what));
        } else {
            // Forget the oldest record, unless its key has been recorded again since.
            let (old, _) = std::mem::replace(&mut self.ring[pos], (key, what));
            if self.index.get(old) == Some(pos as u32) {
                self.index.remove(old);
            }
        }
        // Every key held points at a distinct position other than `pos` now, so the index
        // holds fewer than `capacity` keys and has room without growing.
        self.index.set(key, pos as u32);
        self.next = if pos + 1 == self.capacity { 0 } else { pos + 1 };
    }

    /// True when `key` is among the last `capacity` records.
    #[cfg(test)]
    pub(crate) fn contains(&self, key: u64) -> bool {
        self.index.get(key).is_some()
    }

    /// The latest record of `key`, when it is among the last `capacity`.
    pub(crate) fn recall(&self, key: u64) -> Option<Remembered> {
        self.index.get(key).map(|pos| self.ring[pos as usize].1)
    }

    /// Distinct keys remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.index.len()
    }

    /// Records remembered at most.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes taken, all of them from construction on.
    pub(crate) fn bytes(&self) -> usize {
        self.index.bytes() + self.ring.capacity() * std::mem::size_of::<(u64, Remembered)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::mix;

    #[test]
    fn the_default_endpoint_cap_remembers_24576_keys_in_1088_kib() {
        let s = SeenKeys::for_table(5_000);
        assert_eq!(s.capacity(), 24_576);
        assert_eq!(s.bytes(), 32_768 * 16 + 24_576 * 24);
        assert_eq!(s.bytes(), 1088 << 10);
        assert_eq!(SeenKeys::for_table(1).capacity(), 12);
        assert_eq!(SeenKeys::for_table(100_000_000).capacity(), 1_572_864);
    }

    #[test]
    fn remembers_the_last_keys_recorded_and_forgets_the_oldest() {
        let mut s = SeenKeys::with_capacity(100);
        for k in 0..100u64 {
            assert!(!s.contains(mix(k)));
            s.remember(mix(k), Remembered::default());
        }
        assert!((0..100u64).all(|k| s.contains(mix(k))));
        // Key 0 recorded again is the newest: the next 99 records push out keys 1..100
        // and keep it.
        s.remember(mix(0), Remembered::default());
        for k in 100..199u64 {
            s.remember(mix(k), Remembered::default());
        }
        assert!(s.contains(mix(0)));
        assert!((1..100u64).all(|k| !s.contains(mix(k))));
        assert!((100..199u64).all(|k| s.contains(mix(k))));
        assert_eq!(s.len(), 100);
        // The same key over and over holds one entry and pushes everything else out.
        for _ in 0..250 {
            s.remember(7, Remembered::default());
        }
        assert_eq!(s.len(), 1);
        assert!(s.contains(7) && !s.contains(mix(0)));
    }

    #[test]
    fn a_flood_of_random_keys_neither_grows_it_nor_makes_unseen_keys_read_as_seen() {
        let mut s = SeenKeys::for_table(500);
        let cap = s.capacity();
        let bytes = s.bytes();
        let returning: Vec<u64> = (0..50u64).map(|k| mix(k ^ 0xABCD)).collect();
        for &k in &returning {
            s.remember(k, Remembered::default());
        }
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // Fifty times the capacity in random keys, as an attacker sending random paths
        // would make the inventory evict.
        let mut last = Vec::new();
        for i in 0..50 * cap {
            let k = next();
            s.remember(k, Remembered::default());
            if i >= 49 * cap {
                last.push(k);
            }
            assert!(s.len() <= cap);
        }
        assert_eq!(s.bytes(), bytes, "the memory grew");
        assert_eq!(s.len(), cap);
        // It forgot the oldest keys and holds the newest, rather than filling up.
        assert!(returning.iter().all(|&k| !s.contains(k)));
        assert!(last.iter().all(|&k| s.contains(k)));
        // Keys never recorded read as unseen (a 64-bit key would have to repeat).
        let false_seen = (0..100_000).filter(|_| s.contains(next())).count();
        assert!(
            false_seen < 100,
            "{false_seen} of 100,000 unseen keys read as seen"
        );
    }

    #[test]
    fn a_key_is_recalled_with_its_latest_record() {
        let mut s = SeenKeys::with_capacity(4);
        let r = |first_seen, new| Remembered { first_seen, new };
        assert_eq!(s.recall(1), None);
        s.remember(1, r(10, true));
        s.remember(2, r(20, false));
        assert_eq!(
            (s.recall(1), s.recall(2)),
            (Some(r(10, true)), Some(r(20, false)))
        );
        s.remember(1, r(10, false));
        assert_eq!(s.recall(1), Some(r(10, false)));
        // Pushed out by four later records.
        for k in 3..7 {
            s.remember(k, r(k as i64, true));
        }
        assert_eq!((s.recall(1), s.recall(2)), (None, None));
        assert_eq!(s.recall(6), Some(r(6, true)));
    }

    #[test]
    fn what_is_remembered_does_not_depend_on_the_secret() {
        let (mut a, mut b) = (SeenKeys::with_capacity(64), SeenKeys::with_capacity(64));
        for i in 0..5_000u64 {
            let k = mix(i % 300);
            assert_eq!(a.contains(k), b.contains(k), "step {i}");
            a.remember(k, Remembered::default());
            b.remember(k, Remembered::default());
        }
        assert!((0..300u64).all(|k| a.contains(mix(k)) == b.contains(mix(k))));
    }
}
